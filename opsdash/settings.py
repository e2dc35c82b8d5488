"""OpsDash settings: one file, every knob an ``OPSDASH_*`` environment variable.

Defaults give a working local install under ``./var``. The table in README.md lists every
variable; ``opsdash/env.py`` holds the helpers that refuse malformed values.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psutil
from django.core.exceptions import ImproperlyConfigured

from opsdash.env import (
    envbool,
    envbytes,
    envdecimal,
    envint,
    envlist,
    envpath,
    envsecret,
    envstr,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = envpath("OPSDASH_DATA_DIR", BASE_DIR / "var")
MODELS_DIR = envpath("OPSDASH_MODELS_DIR", DATA_DIR / "models")
MODEL_ROOTS = [Path(p).expanduser().resolve() for p in envlist("OPSDASH_MODEL_ROOTS", [], sep=":")]
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The configured key, else one generated once and kept (0600) in the data dir."""
    configured = envsecret("OPSDASH_SECRET_KEY")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("OPSDASH_DEBUG", False)
HOST = envstr("OPSDASH_HOST", "127.0.0.1")
PORT = envint("OPSDASH_PORT", 8000, minimum=1)
ALLOWED_HOSTS = envlist("OPSDASH_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = envlist("OPSDASH_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "ninja",
    "axes",
    "opsdash.core",
    "opsdash.accounts",
    "opsdash.catalog",
    "opsdash.runs",
    "opsdash.playground",
    "opsdash.telemetry",
    "opsdash.savings",
    "opsdash.gateway",
    "opsdash.fleet",
    # After savings: its finalizer reads the cost savings froze on the run.
    "opsdash.notify",
    "opsdash.limits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "opsdash.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "opsdash.urls"
ASGI_APPLICATION = "opsdash.asgi.application"
WSGI_APPLICATION = None

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
                "opsdash.accounts.context_processors.roles",
            ],
        },
    },
]


def _database() -> dict[str, object]:
    """SQLite in WAL mode by default; PostgreSQL from ``OPSDASH_DATABASE_URL``."""
    url = envstr("OPSDASH_DATABASE_URL", "")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "opsdash.sqlite3",
            "OPTIONS": {
                # WAL lets the sampler, installs and page views write without blocking
                # readers; IMMEDIATE avoids "database is locked" on lock upgrades.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not :memory:, so install threads and the live server share it as in
            # production; one per test process, so two test runs never share it.
            "TEST": {"NAME": DATA_DIR / f"test-opsdash-{os.getpid()}.sqlite3"},
        }
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"OPSDASH_DATABASE_URL must start with postgres:// or postgresql://, not {url!r}."
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 60,
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_redis_url = envstr("OPSDASH_REDIS_URL", "")


def _channel_layer() -> dict[str, object]:
    if not _redis_url:
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    host = {
        "address": _redis_url,
        # redis-py 8 reads with a 5 s socket timeout by default, as long as channels-redis
        # blocks in BZPOPMIN waiting for a message: every idle consumer then died each 5 s
        # (channels_redis#422). A read timeout above the block still notices a dead server.
        "socket_timeout": 15,
        # After a Redis restart every pooled connection is dead: a command on one reconnects
        # and tries again instead of failing (a node's group join, a routed request), and an
        # idle one is checked before use.
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 5),
        "health_check_interval": 10,
    }
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [host],
            # A reply channel carries one generation's token events; a fast model on a busy
            # hub outruns the reader by bursts, and a full channel drops events (text lost).
            "channel_capacity": {"specific.*": 5000},
        },
    }


CHANNEL_LAYERS = {"default": _channel_layer()}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Sign-in throttling (django-axes): after OPSDASH_LOGIN_FAILURE_LIMIT wrong passwords in a row an
# account is locked for OPSDASH_LOGIN_LOCKOUT_MINUTES (the sign-in page says so);
# `manage.py axes_reset_username NAME` unlocks it at once. Locked by username alone: behind a
# proxy every client may share one address, and a guesser may use many.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("OPSDASH_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("OPSDASH_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username"]
# axes.W006 warns that a lockout without the address can be dodged by rotating user agents or
# cookies; neither is a lockout parameter here, so a guesser rotating them still hits the lock.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "opsdash.accounts.views.locked_out"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
REPORT_TIME_ZONE = envstr("OPSDASH_REPORT_TIME_ZONE", "UTC")

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Uploads: model files stream straight into <models>/.partial through our own handler, never
# into memory or /tmp; this only bounds ordinary form fields.
MAX_UPLOAD_BYTES = envbytes("OPSDASH_MAX_UPLOAD_BYTES", 64 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# The ASGI body guard (opsdash.core.bodylimits) lets no other body past this size, so Django's
# spool of a request body (it reads each one whole before the view) never reaches the disk.
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# An install refuses to start, and stops, when the models folder would keep less than this free.
MIN_FREE_BYTES = envbytes("OPSDASH_MIN_FREE_BYTES", 512 * 1024**2)
# How long one read of a download may wait for data (a silent server), then the retry.
DOWNLOAD_TIMEOUT_SECONDS = envint("OPSDASH_DOWNLOAD_TIMEOUT_SECONDS", 30, minimum=1)
DOWNLOAD_ATTEMPTS = envint("OPSDASH_DOWNLOAD_ATTEMPTS", 4, minimum=1)
# A whole download, retries included, must end within this (0: no limit). 12 hours fetch a
# 40 GB GGUF at 1 MB/s; a server dribbling slower than the minimum below fails long before.
DOWNLOAD_DEADLINE_SECONDS = envint("OPSDASH_DOWNLOAD_DEADLINE_SECONDS", 12 * 3600, minimum=0)
# Every window of this many seconds must bring at least this rate (0: no minimum).
DOWNLOAD_MIN_BYTES_PER_SECOND = envbytes("OPSDASH_DOWNLOAD_MIN_BYTES_PER_SECOND", 64 * 1024)
DOWNLOAD_RATE_WINDOW_SECONDS = envint("OPSDASH_DOWNLOAD_RATE_WINDOW_SECONDS", 60, minimum=1)
# Install workers: URL downloads have their own pool, so slow servers never hold up installs
# from a server path or an upload (opsdash/catalog/jobs.py says why).
INSTALL_WORKERS = envint("OPSDASH_INSTALL_WORKERS", 2, minimum=1)
DOWNLOAD_WORKERS = envint("OPSDASH_DOWNLOAD_WORKERS", 2, minimum=1)
TRIAL_LOAD_TIMEOUT_SECONDS = envint("OPSDASH_TRIAL_LOAD_TIMEOUT_SECONDS", 180, minimum=5)

MEMORY_BUDGET_BYTES = envbytes(
    "OPSDASH_MEMORY_BUDGET_BYTES", int(psutil.virtual_memory().total * 0.6)
)
IDLE_UNLOAD_SECONDS = envint("OPSDASH_IDLE_UNLOAD_SECONDS", 300, minimum=0)
QUEUE_DEPTH = envint("OPSDASH_QUEUE_DEPTH", 4, minimum=1)
ELECTRICITY_USD_PER_KWH = envdecimal("OPSDASH_ELECTRICITY_USD_PER_KWH", "0.17")
METRICS_TOKEN = envsecret("OPSDASH_METRICS_TOKEN")
DEMO_PASSWORD = envsecret("OPSDASH_DEMO_PASSWORD")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Behind a TLS-terminating proxy (which must set X-Forwarded-Proto): HTTPS only, with HSTS and
# cookies that never travel in clear. Health checks and scrapes from inside may stay on HTTP.
BEHIND_TLS_PROXY = envbool("OPSDASH_BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("OPSDASH_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("OPSDASH_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = envbool("OPSDASH_HSTS_PRELOAD", False)
    # W005/W021 ask for subdomains and preloading; both bind every other host of the parent
    # domain to HTTPS for a year or for good, a choice for its owner, not for one dashboard.
    SILENCED_SYSTEM_CHECKS += ["security.W005", "security.W021"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("OPSDASH_LOG_LEVEL", "INFO")},
}

# Fleet
# Embedded (the default): this process is the one node; it samples and runs models itself.
# Fleet hub (OPSDASH_FLEET, on by default with a Redis URL): web processes on PostgreSQL and
# Redis that run no model and sample nothing; each GPU machine runs `manage.py agent`.
FLEET = envbool("OPSDASH_FLEET", bool(_redis_url))
if FLEET and not _redis_url:
    raise ImproperlyConfigured(
        "OPSDASH_FLEET needs OPSDASH_REDIS_URL: hub processes reach each node's socket through "
        "the Redis channel layer."
    )
# This machine's node name: the embedded node, or the agent's (manage.py agent --name).
NODE_NAME = envstr("OPSDASH_NODE_NAME", os.uname().nodename.split(".")[0])
NODE_UNHEALTHY_SECONDS = envint("OPSDASH_NODE_UNHEALTHY_SECONDS", 15, minimum=1)
NODE_OFFLINE_SECONDS = envint("OPSDASH_NODE_OFFLINE_SECONDS", 60, minimum=1)
# What `manage.py agent` dials, and the enrollment token it presents the first time.
HUB_URL = envstr("OPSDASH_HUB_URL", "")
NODE_TOKEN = envsecret("OPSDASH_NODE_TOKEN")

# Telemetry
# One sampler per process in embedded mode; in a fleet each agent runs its node's sampler and
# the hub processes relay their frames.
TELEMETRY_EMBEDDED = envbool("OPSDASH_TELEMETRY_EMBEDDED", not FLEET)
TELEMETRY_HOST = envstr("OPSDASH_TELEMETRY_HOST", NODE_NAME)
TELEMETRY_TICK_MS = envint("OPSDASH_TELEMETRY_TICK_MS", 1000, minimum=100)
# A socket with frames waiting and nothing acknowledged this long is closed (the page reconnects).
TELEMETRY_STALL_SECONDS = envint("OPSDASH_TELEMETRY_STALL_SECONDS", 10, minimum=1)
TELEMETRY_HISTORY_DAYS = envint("OPSDASH_TELEMETRY_HISTORY_DAYS", 30, minimum=1)


def _networks(name: str) -> list[str]:
    """Addresses or CIDR networks, normalized; a malformed one stops the server."""
    import ipaddress

    networks = []
    for item in envlist(name, []):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list addresses or networks such as 127.0.0.1 or 10.0.0.0/8, "
                f"not {item!r}."
            ) from None
    return networks


# Scrapers from these addresses need no token for /metrics (e.g. 127.0.0.1,10.0.0.0/8).
METRICS_ALLOW_FROM = _networks("OPSDASH_METRICS_ALLOW_FROM")

# Notifications (opsdash.notify): alert email over SMTP, and the address links point to.
# Unset OPSDASH_SMTP_HOST: email channels say "SMTP is not configured" and their deliveries fail
# with that sentence; webhooks still work. STARTTLS is on by default when a user is set, so a
# password never crosses the network in clear; OPSDASH_SMTP_SSL is TLS from the first byte (465).
SMTP_HOST = envstr("OPSDASH_SMTP_HOST", "")
SMTP_SSL = envbool("OPSDASH_SMTP_SSL", False)
SMTP_USER = envstr("OPSDASH_SMTP_USER", "")
SMTP_PASSWORD = envsecret("OPSDASH_SMTP_PASSWORD") or ""
SMTP_STARTTLS = envbool("OPSDASH_SMTP_STARTTLS", bool(SMTP_USER) and not SMTP_SSL)
if SMTP_SSL and SMTP_STARTTLS:
    raise ImproperlyConfigured("Set OPSDASH_SMTP_SSL or OPSDASH_SMTP_STARTTLS, not both.")
SMTP_PORT = envint(
    "OPSDASH_SMTP_PORT", 465 if SMTP_SSL else 587 if SMTP_STARTTLS else 25, minimum=1
)
SMTP_TIMEOUT_SECONDS = envint("OPSDASH_SMTP_TIMEOUT_SECONDS", 10, minimum=1)
EMAIL_FROM = envstr("OPSDASH_EMAIL_FROM", f"OpsDash <opsdash@{NODE_NAME}>")
DEFAULT_FROM_EMAIL = EMAIL_FROM
# The address people reach this server at, for links in emails and webhook payloads.
PUBLIC_URL = envstr("OPSDASH_PUBLIC_URL", f"http://{HOST}:{PORT}").rstrip("/")
# How often each hub process's sender looks for due deliveries (it is also woken on commit).
NOTIFY_POLL_SECONDS = envint("OPSDASH_NOTIFY_POLL_SECONDS", 5, minimum=1)
