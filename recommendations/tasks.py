"""Celery tasks: thin, idempotent, ids in; each is one call into the engine."""
