"""Django's PostgreSQL backend, reconnecting a statement whose connection the server dropped (see `base`)."""
