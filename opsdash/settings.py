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
    # Single sign-on (the OIDC block at the end): answers only a provider's callback, and
    # nothing at all while OPSDASH_OIDC_ISSUER is unset.
    "opsdash.accounts.oidc.OpsDashOIDCBackend",
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
# How many requests one llama.cpp runner decodes together in one batch (ctransformers: one).
# A model whose memory estimate with this many sequences does not fit the budget gets fewer.
PARALLEL_SEQUENCES = envint("OPSDASH_PARALLEL_SEQUENCES", 4, minimum=1)
# Interactive requests one model may hold waiting beyond those being decoded; more get 429.
QUEUE_DEPTH = envint("OPSDASH_QUEUE_DEPTH", 4, minimum=1)
# The largest JSONL file the Batch API takes (POST /v1/files, purpose "batch").
BATCH_FILE_MAX_BYTES = envbytes("OPSDASH_BATCH_FILE_MAX_BYTES", 100 * 1024**2)
# The most requests one batch file may hold.
BATCH_MAX_REQUESTS = envint("OPSDASH_BATCH_MAX_REQUESTS", 50_000, minimum=1)
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

# A refused request (403, a suspicious host) is one WARNING line naming who was refused what,
# without the traceback Django attaches (opsdash.core.logfilters).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"refusals": {"()": "opsdash.core.logfilters.RefusalsInOneLine"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["refusals"],
        }
    },
    "loggers": {
        "django.request": {"filters": ["refusals"]},
        "django.security": {"filters": ["refusals"]},
    },
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

# Single sign-on by OpenID Connect (opsdash.accounts.oidc, mozilla-django-oidc): the
# authorization code flow with PKCE, state and nonce. Set the issuer, client id and secret; the
# endpoints come from the issuer's /.well-known/openid-configuration (read at the first sign-in,
# not at start) unless given one by one. Every sign-in sets the user's roles from the groups
# claim through OPSDASH_OIDC_ROLE_MAP ("ops-team=operator,finance=manager,it=admin"); groups that
# map to nothing give no role. OPSDASH_LOCAL_PASSWORDS=false leaves only the SSO button:
# superusers keep their local password as the break-glass for a provider that is down.
OIDC_ISSUER = envstr("OPSDASH_OIDC_ISSUER", "").rstrip("/")
OIDC_RP_CLIENT_ID = envstr("OPSDASH_OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = envsecret("OPSDASH_OIDC_CLIENT_SECRET") or ""
OIDC_NAME = envstr("OPSDASH_OIDC_NAME", "single sign-on")
OIDC_RP_SCOPES = envstr("OPSDASH_OIDC_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = envstr("OPSDASH_OIDC_GROUPS_CLAIM", "groups")
# The claim a new user's username comes from; the email address when the provider omits it.
OIDC_USERNAME_CLAIM = envstr("OPSDASH_OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_RP_SIGN_ALGO = envstr("OPSDASH_OIDC_SIGN_ALGO", "RS256")
OIDC_OP_AUTHORIZATION_ENDPOINT = envstr("OPSDASH_OIDC_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = envstr("OPSDASH_OIDC_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = envstr("OPSDASH_OIDC_USERINFO_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = envstr("OPSDASH_OIDC_JWKS_ENDPOINT", "")
OIDC_OP_END_SESSION_ENDPOINT = envstr("OPSDASH_OIDC_END_SESSION_ENDPOINT", "")
LOCAL_PASSWORDS = envbool("OPSDASH_LOCAL_PASSWORDS", True)
# Signing out of OpsDash also ends the provider's session (RP-initiated logout), when it
# publishes an end_session_endpoint; register <OpsDash>/accounts/login/ as a post-logout URL.
OIDC_PROVIDER_LOGOUT = envbool("OPSDASH_OIDC_PROVIDER_LOGOUT", False)
# The role names of opsdash.accounts.roles.Role (importing it here would load the auth models
# before Django is set up; tests/accounts/test_oidc_settings.py checks the two agree).
_ROLE_NAMES = ("operator", "admin", "manager")


def _oidc_role_map(value: str) -> dict[str, frozenset[str]]:
    """``group=role,group=role``: a group may be named twice to give it two roles."""
    mapping: dict[str, set[str]] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        group, sep, role = (piece.strip() for piece in item.rpartition("="))
        if not sep or not group or role not in _ROLE_NAMES:
            raise ImproperlyConfigured(
                f"OPSDASH_OIDC_ROLE_MAP items read group=role with role one of "
                f"{', '.join(_ROLE_NAMES)}, as in ops-team=operator,finance=manager; "
                f"{item!r} is not one."
            )
        mapping.setdefault(group, set()).add(role)
    return {group: frozenset(roles) for group, roles in mapping.items()}


OIDC_ROLE_MAP = _oidc_role_map(envstr("OPSDASH_OIDC_ROLE_MAP", ""))


def _check_oidc() -> None:
    """Refuse half a configuration: it would show a button that cannot work."""
    if not OIDC_ISSUER:
        stray = [
            name
            for name in (
                "OPSDASH_OIDC_CLIENT_ID",
                "OPSDASH_OIDC_CLIENT_SECRET",
                "OPSDASH_OIDC_CLIENT_SECRET_FILE",
                "OPSDASH_OIDC_ROLE_MAP",
                "OPSDASH_OIDC_AUTHORIZATION_ENDPOINT",
                "OPSDASH_OIDC_TOKEN_ENDPOINT",
                "OPSDASH_OIDC_USERINFO_ENDPOINT",
                "OPSDASH_OIDC_JWKS_ENDPOINT",
            )
            if os.environ.get(name, "").strip()
        ]
        if stray:
            raise ImproperlyConfigured(
                f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} set but "
                f"OPSDASH_OIDC_ISSUER is not: single sign-on needs the provider's issuer URL, "
                f"OPSDASH_OIDC_CLIENT_ID and OPSDASH_OIDC_CLIENT_SECRET together."
            )
        if not LOCAL_PASSWORDS:
            raise ImproperlyConfigured(
                "OPSDASH_LOCAL_PASSWORDS=false needs single sign-on (OPSDASH_OIDC_ISSUER, "
                "OPSDASH_OIDC_CLIENT_ID, OPSDASH_OIDC_CLIENT_SECRET): otherwise only superusers "
                "could sign in."
            )
        return
    if urlsplit(OIDC_ISSUER).scheme not in {"http", "https"} or not urlsplit(OIDC_ISSUER).netloc:
        raise ImproperlyConfigured(
            f"OPSDASH_OIDC_ISSUER must be the provider's URL, such as "
            f"https://login.example.com/realms/staff, not {OIDC_ISSUER!r}."
        )
    missing = [
        name
        for name, value in (
            ("OPSDASH_OIDC_CLIENT_ID", OIDC_RP_CLIENT_ID),
            ("OPSDASH_OIDC_CLIENT_SECRET", OIDC_RP_CLIENT_SECRET),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"OPSDASH_OIDC_ISSUER is set but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not: register OpsDash with the provider "
            f"(callback URL <OpsDash>/accounts/oidc/callback/) and set what it gives you."
        )
    if OIDC_RP_SIGN_ALGO not in {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}:
        raise ImproperlyConfigured(
            f"OPSDASH_OIDC_SIGN_ALGO must be an asymmetric algorithm such as RS256 or ES256, "
            f"not {OIDC_RP_SIGN_ALGO!r}."
        )
    if "openid" not in OIDC_RP_SCOPES.split():
        raise ImproperlyConfigured(
            f"OPSDASH_OIDC_SCOPES must include openid (OpenID Connect), not {OIDC_RP_SCOPES!r}."
        )


_check_oidc()
# What mozilla-django-oidc reads itself: PKCE on, a nonce and state per sign-in (its defaults),
# our callback's URL name, the ID token kept for the provider's sign-out.
OIDC_USE_PKCE = True
OIDC_AUTHENTICATION_CALLBACK_URL = "accounts:oidc_callback"
OIDC_STORE_ID_TOKEN = True
OIDC_TIMEOUT = 10
