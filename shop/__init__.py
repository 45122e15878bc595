"""The demo shop: a small real store that hosts the recommendations app."""

from shop.celery import app as celery_app

__all__ = ["celery_app"]
