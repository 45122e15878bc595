"""Settings of a plain host project: Django's own defaults plus the README's three steps, nothing from `shop/`.

No Celery app, no broker, no DRF throttle rates, no cache: the app must work with what it ships.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "plain-host-test-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.hosts.plain.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tests.hosts.plain.catalog",
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
DATABASES = {"default": dj_database_url.parse(os.environ["HOST_DATABASE_URL"])}
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Step 1 of the README.
INSTALLED_APPS += ["rest_framework", "django_celery_beat", "recommendations"]
MIDDLEWARE += ["recommendations.tracking.VisitorMiddleware"]

# Step 2.
RECOMMENDATIONS = {
    "PRODUCT_MODEL": "catalog.Item",
    "PRODUCT_FIELDS": {
        "name": "title",
        "category": "shelf__slug",
        "price": "cost",
        "in_stock": "stock",
        "text": "blurb",
        "created_at": "added",
        "active": "published",
    },
}
