"""Settings of a plain Django 5.2 shop that is not the demo: startproject's defaults, its own `catalog` app, then
the README's installation steps and nothing else (no Celery app: the app's tasks run in-process).

The services come from the environment, as tests/hosts/run passes them: DATABASE_URL, and CACHE_URL for a Redis cache.
"""

import os
from pathlib import Path

import dj_database_url
from django.db.models import Max, Min

from recommendations.product_fields import Values

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "offers-host-test-key"  # a test project's key, never deployed
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "offers_site.urls"
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "catalog",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1/offers"))}
if os.environ.get("CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["CACHE_URL"],
            "KEY_PREFIX": "offers-host",
        }
    }
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Step 1 of the README: the app, its dependencies' apps and the visitor middleware.
INSTALLED_APPS += ["rest_framework", "django_celery_beat", "recommendations"]
MIDDLEWARE += ["recommendations.tracking.VisitorMiddleware"]

# Step 2: the product model and where each feature lives. A product is in several categories (all of them are
# features), its price is the lowest offer's and it is in stock when any offer has stock.
RECOMMENDATIONS = {
    "PRODUCT_MODEL": "catalog.Product",
    "PRODUCT_FIELDS": {
        "name": "name",
        "category": Values("categories__slug", pick="all"),
        "price": Min("offers__price"),
        "in_stock": Max("offers__stock"),
        "text": "description",
        "created_at": "created",
    },
    "TASKS": "inline",
}
