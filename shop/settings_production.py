"""Production settings: the demo defaults, hardened. Select with DJANGO_SETTINGS_MODULE=shop.settings_production."""

import os

from django.core.exceptions import ImproperlyConfigured

from shop.settings import *  # noqa: F403
from shop.settings import DEMO_SECRET_KEY, SECRET_KEY, env_bool

if SECRET_KEY == DEMO_SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY to a long random value for production.")

DEBUG = env_bool("DJANGO_DEBUG", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
RECOMMENDATIONS_VISITOR_COOKIE_SECURE = True
