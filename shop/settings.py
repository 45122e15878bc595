"""Settings of the demo shop.

Everything that differs between a laptop demo and a deployment comes from environment variables; with
none set the shop runs on SQLite with Celery tasks executed eagerly, so `make demo` needs no services.
`shop.settings_production` hardens these for a real deployment.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable the way shell users write it."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


# The demo key is public on purpose: production settings refuse to start with it.
DEMO_SECRET_KEY = "demo-insecure-key-change-me-in-production-0123456789abcdefghij"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEMO_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from STATIC_URL, never a CDN
    "django_celery_beat",
    "recommendations",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before CommonMiddleware (docs: "How Django discovers language preference").
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "recommendations.tracking.VisitorMiddleware",
]

ROOT_URLCONF = "shop.urls"

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
                "shop.context_processors.shop",
            ],
        },
    },
]

WSGI_APPLICATION = "shop.wsgi.application"

# SQLite (the demo) serves a click's write and the next page's at once: IMMEDIATE transactions take the write lock
# up front, so a second writer waits its turn (up to `timeout` seconds) instead of failing at once with "database is
# locked" (a deferred transaction that read first cannot wait: upgrading its lock would deadlock); WAL lets pages
# read while one writes. Django 5.1+ reads these OPTIONS (docs: databases, "SQLite notes").
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
}
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        # A kept connection PostgreSQL dropped meanwhile (a restart, a failover, pg_terminate_backend) is found out
        # and replaced at the start of the next request, instead of failing that request's first query (a 5xx).
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, but a read whose connection PostgreSQL dropped in the middle of a request is sent again on a
    # new one (recommendations/postgresql/base.py): a blip costs no 500 and no empty block.
    DATABASES["default"]["ENGINE"] = "recommendations.postgresql"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A shared cache (Redis) when configured: throttling and cached reads must agree across processes.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL:
    # Django's Redis backend, keeping its client between calls and going on without Redis when it cannot be reached
    # (recommendations/cache_backends.py). The timeouts are deliberate: a Redis on this machine or its LAN connects
    # and answers in about a millisecond, so half a second means it is hung (or the network is), and without a timeout
    # a hung Redis would hold each request for as long as the operating system waits. After one failure the breaker
    # skips Redis for BREAKER_SECONDS, then one request tries again (docs/operations.md, "When parts fail").
    CACHES = {
        "default": {
            "BACKEND": "recommendations.cache_backends.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "BREAKER_SECONDS": 5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
# English is the source and the default; a shopper switches with the header's buttons (set_language) or their
# browser's Accept-Language.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
# The site's own strings (templates/ and shop/) are kept in shop/locale; the app ships its own catalogue.
LOCALE_PATHS = [BASE_DIR / "shop" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the JS tracker never needs it; forms carry the token
X_FRAME_OPTIONS = "DENY"

# Celery: a real broker when configured, otherwise tasks run in-process so the demo needs no services.
_BROKER = os.environ.get("CELERY_BROKER_URL", "")
# No broker: tasks run eagerly in-process; "memory://" keeps Celery from reaching for a localhost broker meanwhile.
CELERY_BROKER_URL = _BROKER or "memory://"
CELERY_TASK_ALWAYS_EAGER = not _BROKER
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", _BROKER or None)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# When a worker dies mid-task (docs/operations.md, "When a worker dies"). The app's tasks ask for acks_late and
# reject_on_worker_lost themselves (recommendations.tasks.REDELIVERED: they are idempotent, so a second delivery is
# safe); acks_late here covers any task the site adds. Prefetch 1: a worker reserves no message beyond the one it runs,
# so a worker that dies strands at most that one, and a long precompute never holds short refreshes behind it.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A broker hiccup must not cancel an hour-long retrain: it runs on, and a copy of its message delivered meanwhile
# finds the run's heartbeat fresh and does nothing (Celery 6 would cancel it by default).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Socket timeouts on the broker's connections. Without them a broker that hangs without closing its connections (a
# frozen Redis, a partition) holds a publish, and so the web request that sends a refresh task, forever (kombu's
# default). 5 s stays well above the 1 s the worker's BRPOP waits for a message, so an idle worker never times out;
# the app's breaker then skips the broker for 30 s (recommendations.tasks.BROKER), so a web process pays it once.
# Visibility timeout: Redis hands a message that is still unacknowledged this long after its delivery to another
# worker (its worker is presumed dead). Ten minutes, not kombu's hour: a refresh, a shard or an analytics rebuild
# whose worker died comes back within minutes; yet it stays above the longest task that has no run row to fence it
# (a shard, a day's analytics) and above every countdown (the refresh debounce), so none runs twice at once. A
# precompute or retrain does not wait for it: its heartbeat goes quiet, and recover_runs (beat, every minute) has it
# taken over after RUN_STALE_SECONDS; one that runs longer than this is redelivered and the copy does nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5, "visibility_timeout": 600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "recommendations_ingest": os.environ.get("RECOMMENDATIONS_INGEST_RATE", "120/min"),
        "recommendations_ingest_key": os.environ.get("RECOMMENDATIONS_INGEST_KEY_RATE", "6000/min"),
        # A page may fetch several blocks; a server rendering for every shopper shares the key's bucket.
        "recommendations_read": os.environ.get("RECOMMENDATIONS_READ_RATE", "300/min"),
        "recommendations_read_key": os.environ.get("RECOMMENDATIONS_READ_KEY_RATE", "6000/min"),
    },
}

# The OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/); the UI's files come from drf-spectacular-sidecar.
SPECTACULAR_SETTINGS = {
    "TITLE": "Recommendations API",
    "DESCRIPTION": (
        "Send shopper events (`POST /api/events/`) and read recommendation blocks "
        "(`GET /api/recommendations/{placement}/`). Browsers are identified by their session or visitor cookie; "
        "servers send the write key header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

RECOMMENDATIONS = {
    "PRODUCT_MODEL": "shop.Product",
    "PRODUCT_FIELDS": {
        "name": "name",
        "category": "category__slug",
        "brand": "brand__name",
        "price": "price",
        "in_stock": "stock",
        "text": "description",
        "created_at": "created_at",
        "active": "is_active",
    },
    "WRITE_KEY": os.environ.get("RECOMMENDATIONS_WRITE_KEY", ""),
    # Keep behaviour a year and impressions three months (the app keeps everything unless told).
    "EVENT_RETENTION_DAYS": int(os.environ.get("RECOMMENDATIONS_EVENT_RETENTION_DAYS", "365")),
    "IMPRESSION_RETENTION_DAYS": int(os.environ.get("RECOMMENDATIONS_IMPRESSION_RETENTION_DAYS", "90")),
    # Trained models: a directory every worker can read (default <BASE_DIR>/var/models).
    "MODEL_DIR": os.environ.get("RECOMMENDATIONS_MODEL_DIR") or None,
    # Split the for_you precompute into this many Celery tasks (run by however many workers there are).
    "PRECOMPUTE_SHARDS": int(os.environ.get("RECOMMENDATIONS_PRECOMPUTE_SHARDS", "1")),
    # Push e-mails: every link in them starts with the site's root as shoppers reach it.
    "SITE_URL": os.environ.get("RECOMMENDATIONS_SITE_URL", "http://127.0.0.1:8000"),
}

# E-mail: the demo prints e-mails on the console; EMAIL_HOST (and EMAIL_PORT, ...) sends them over SMTP instead.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "") == "1"
EMAIL_TIMEOUT = 10
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Demo shop <shop@example.com>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
