"""Settings shared by every environment, read from the environment (12-factor).

Every value comes from an environment variable (or a ``.env`` file beside
``manage.py``) through django-environ's typed getters; the per-environment
modules only change defaults.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

import contextos

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Writable state of the embedded default (SQLite file, file broker).
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var")))

# --- Core -------------------------------------------------------------------
SECRET_KEY = env.str("SECRET_KEY", default="insecure-development-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "axes",
    "contextos",
    "apps.accounts",
    "apps.health",
    "apps.tasks",
    "apps.ai_interactions",
    "apps.routing",
    "apps.governance",
    "apps.operations",
]

MIDDLEWARE = [
    "contextos.middleware.HTTPMetricsMiddleware",
    "contextos.middleware.AfterResponseMiddleware",
    "contextos.middleware.RequestIDMiddleware",
    "contextos.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The pages' middleware (contextos.middleware.Pages*: CSP, static files, sessions,
    # logins, messages) is the library's own, skipped by the gateway's JSON paths (/v1/).
    "contextos.middleware.PagesCSPMiddleware",
    "contextos.middleware.PagesStaticFilesMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "contextos.middleware.PagesSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "contextos.middleware.PagesAuthenticationMiddleware",
    "contextos.middleware.PagesMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# --- Content-Security-Policy (django-csp) ----------------------------------------------
# Pages (admin, Swagger UI, Redoc, the home page) load scripts, styles, images and fonts
# from this host only, run no inline script and cannot be framed. The docs views add
# inline styles (``config/urls.py``), which Swagger UI and Redoc need. JSON answers of
# the API carry no page to protect: the header is left off them.
CONTENT_SECURITY_POLICY = {
    # The gateway's /v1/ skips the middleware altogether (contextos.middleware.Pages*).
    "EXCLUDE_URL_PREFIXES": ["/api/v1/", "/metrics"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# PostgreSQL through psycopg 3 when DATABASE_URL is set; otherwise a SQLite file
# so that the project runs on a machine with no database server.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'contextos.sqlite3'}")
}
_db = DATABASES["default"]
# PostgreSQL's synchronous_commit for every commit of this process, when set (below).
DATABASE_SYNCHRONOUS_COMMIT = env.str("DATABASE_SYNCHRONOUS_COMMIT", default="")
if _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"]["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=2)
    # Statements bound on the server (contextos.db's row writes; Django's own queries are
    # bound on the client and never prepared) are prepared once a connection has run
    # them 5 times: PostgreSQL then neither parses nor plans them again. Django turns
    # this off by default for poolers that cannot keep prepared statements (PgBouncer
    # before 1.21 in transaction mode): DATABASE_PREPARED_STATEMENTS=false behind one.
    _prepared = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
    _db["OPTIONS"]["prepare_threshold"] = 5 if _prepared else None
    # scripts/start-worker sets "off" for workers (WORKER_DATABASE_SYNCHRONOUS_COMMIT):
    # a task's bookkeeping commits (claim, progress, outcome, result row) then
    # wait for no disk flush, about a third of a small task's time. A crash of
    # PostgreSQL itself can forget the last fraction of a second of them (it
    # never corrupts): a task left "running" by that is failed, or run again if
    # its type is idempotent, by the stuck-task reaper. Web processes keep the
    # server's default, so a request answered 2xx is on disk; the outcome of a
    # budgeted gateway call, written over its row saved as running (on disk before
    # the provider answered), commits without the flush unless this is set.
    if DATABASE_SYNCHRONOUS_COMMIT:
        if DATABASE_SYNCHRONOUS_COMMIT not in {
            "on",
            "off",
            "local",
            "remote_write",
            "remote_apply",
        }:
            raise ImproperlyConfigured(
                f"DATABASE_SYNCHRONOUS_COMMIT={DATABASE_SYNCHRONOUS_COMMIT!r}: "
                "use on, off, local, remote_write or remote_apply."
            )
        _db["OPTIONS"]["options"] = f"-c synchronous_commit={DATABASE_SYNCHRONOUS_COMMIT}"
    if env.bool("DATABASE_POOL", default=True):
        # One psycopg pool per process: connections are shared by the threads
        # of a process (request thread, readiness checks) instead of being
        # opened per thread; Django requires CONN_MAX_AGE = 0 with a pool.
        _db["CONN_MAX_AGE"] = 0
        _db["OPTIONS"]["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
            # As many as a web process has threads (WEB_THREADS), and 2 for the writes
            # done aside while a call waits for its provider (contextos.db).
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=18),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=2.0),
        }
        # Django's backend, checking pooled connections only after a pause
        # (contextos.db) instead of at every request.
        _db["ENGINE"] = "contextos.postgresql"
    else:
        _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # Drop connections a restarted server has closed before using them, so
    # the process recovers from a database outage without a restart.
    _db["CONN_HEALTH_CHECKS"] = True
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Web, worker and beat share the file: WAL lets readers and one writer
    # proceed together, and IMMEDIATE transactions wait instead of failing.
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="contextos")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # A hung Redis must not hang requests: fail within a second.
                "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_CONNECT_TIMEOUT", default=1.0),
                "SOCKET_TIMEOUT": env.float("REDIS_SOCKET_TIMEOUT", default=1.0),
                # Cache outages degrade to misses; they are logged, never silent.
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
else:
    # Without Redis, a table of the database (contextos.CacheEntry, created by
    # migrate): shared by every web, worker and beat process, as Redis is. Its
    # add() is atomic (an IMMEDIATE transaction on SQLite, the primary key on
    # PostgreSQL), which the rate limit, the AI answer lock and the job locks
    # need; a file cache checks then writes, and lists its whole directory at
    # every write. A read is one indexed SELECT, a write one short transaction
    # (about 40 and 120 µs on SQLite, measured).
    CACHES = {
        "default": {
            "BACKEND": "contextos.cache.DatabaseCache",
            "LOCATION": "contextos_cache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            # Past this many rows a write first deletes the expired ones (then a third).
            "OPTIONS": {"MAX_ENTRIES": 20_000},
        }
    }
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "contextos.cache"

# --- Auth, i18n, static -------------------------------------------------------
# django-axes' backend first: it refuses a locked-out user name and address before
# any password is checked (see "Admin login lockout" below).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Admin login lockout (django-axes) -------------------------------------------
# Wrong passwords are counted per user name and client address together: after
# ADMIN_LOGIN_FAILURE_LIMIT of them, that pair is locked out until
# ADMIN_LOGIN_COOLOFF_MINUTES have passed since its last attempt (a 429 page; an
# attempt during the lockout, right password or not, starts the cool-off again).
# The same name from another address, and other names from that address, still
# log in. Lockouts are rows in the database, listed under "Axes" in the admin,
# where deleting one lifts it; the audit log records each lockout and each lift
# (apps.accounts.lockout).
ADMIN_LOGIN_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
ADMIN_LOGIN_COOLOFF_MINUTES = env.float("ADMIN_LOGIN_COOLOFF_MINUTES", default=15.0)
if ADMIN_LOGIN_FAILURE_LIMIT < 1 or ADMIN_LOGIN_COOLOFF_MINUTES <= 0:
    raise ImproperlyConfigured(
        "ADMIN_LOGIN_FAILURE_LIMIT must be 1 or more and ADMIN_LOGIN_COOLOFF_MINUTES above 0."
    )
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ADMIN_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The login form's field (axes' default is a lazy object of the same value).
AXES_USERNAME_FORM_FIELD = "username"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_LOCKOUT_CALLABLE = "apps.accounts.lockout.lockout_response"
# The client's address is REMOTE_ADDR, the peer gunicorn saw (or the address a
# PROXY-protocol front end reported): never X-Forwarded-For, which any client can
# write. Behind a reverse proxy every login then comes from the proxy's address,
# and a lockout holds for that user name whatever the client's address.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
# No "AXES: BEGIN ..." line at the start of every process and command.
AXES_VERBOSE = False

# --- HTTP -------------------------------------------------------------------
# Bodies over this size answer 413 before any parsing.
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
# Every response says where its time went (auth, limits, cache, route, provider,
# record, total; contextos/timing.py) in a Server-Timing header. Off by default: the
# timings tell a client whether its answer came from the cache.
SERVER_TIMING = env.bool("SERVER_TIMING", default=False)

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/(api|v1)/.*$"
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After"]

# /api/v1/health/ready is public: each web process probes the database, cache
# and broker at most once per this many seconds and answers from that report
# in between, so probes (or anyone) calling it in a loop cannot load them.
HEALTH_READY_CACHE_SECONDS = env.float("HEALTH_READY_CACHE_SECONDS", default=1.0)

# --- In flight --------------------------------------------------------------
# An API key has at most this many AI calls open at once (web calls: REST sync and
# the gateway, streamed or not), unless its limits set max_parallel_requests; 0: none.
API_MAX_PARALLEL_REQUESTS = env.int("API_MAX_PARALLEL_REQUESTS", default=16)
# Each web process holds at most this many streams open, keeping the rest of its
# threads (WEB_THREADS, as scripts/start-web passes them to gunicorn) for other calls.
WEB_THREADS = env.int("WEB_THREADS", default=16)
WEB_MAX_STREAMS = env.int("WEB_MAX_STREAMS", default=max(1, WEB_THREADS - 4))
if API_MAX_PARALLEL_REQUESTS < 0 or WEB_MAX_STREAMS < 1:
    raise ImproperlyConfigured(
        "API_MAX_PARALLEL_REQUESTS must be 0 or more, and WEB_MAX_STREAMS 1 or more."
    )

# --- REST framework ---------------------------------------------------------
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="1200/min")
# Authenticated API keys are kept in Redis this long (0: read from the database
# at every request); revocation and deactivation take effect at once anyway.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=60)
# Failed authentications (no key where one is needed, a malformed header, an
# unknown, revoked or expired key) per client address (REMOTE_ADDR, as for the
# admin lockout) and period; past the rate, further failures from that address
# answer 429 with Retry-After, while valid keys from it keep working. Empty: off.
AUTH_FAILURE_RATE = env.str("AUTH_FAILURE_RATE", default="20/min")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["contextos.throttling.APIKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": API_RATE_LIMIT},
    "DEFAULT_PAGINATION_CLASS": "contextos.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_PARSER_CLASSES": ["contextos.parsers.JSONParser"],
    # JSON unless a browser asks for HTML: staff logged in to the admin can
    # explore the API in the browsable renderer.
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "contextos.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ContextOS API",
    "DESCRIPTION": (
        "A self-hosted gateway for AI work and background jobs. "
        "Authenticate with `Authorization: Bearer <api key>`."
    ),
    "VERSION": contextos.__version__,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from the public validator at swagger.io: the docs load nothing from other hosts.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "ENUM_NAME_OVERRIDES": {
        "LiveStatusEnum": ["ok"],
        "CheckStatusEnum": ["ok", "error"],
        "ReadinessStatusEnum": ["ok", "unavailable"],
    },
}

# --- Celery -----------------------------------------------------------------
# With no broker configured, the embedded default is kombu's file-system
# transport under DATA_DIR: a real worker still runs every task out of
# process, and task state is reported through the database as with any broker.
# (kombu names the host of every URL: "localhost" here, or it warns at every start.)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or "filesystem://localhost//"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's, writing each message whole (a worker never reads a half-written one).
    CELERY_BROKER_TRANSPORT = "contextos.file_broker:Transport"
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # How often a worker looks for messages (and a ping for replies). With
        # kombu's 1 s a task waited up to a second to start and a ping's reply
        # came after 1 s; with 0.1 s, after 0.1 s, for about 0.2% of a core per
        # idle worker (0.07% at 1 s; measured).
        "polling_interval": 0.1,
    }
else:
    # Redis redelivers an unacknowledged message after the visibility timeout,
    # so every time limit must stay below it (checked by a settings test).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        # How often workers look for messages whose worker died (Redis), in
        # seconds times every Nth look: at most visibility + interval x throttle.
        "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# A request that publishes must not hang on a dead broker: the task row is
# committed first and recovery publishes it again (see apps.tasks.services).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers and beat reconnect however long the broker is away (Celery's default
# gives up after 100 attempts, about 45 minutes, and the worker exits); attempts
# are at most 30 s apart, so they resume within 30 s of the broker's return.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# django-celery-results' rows, written with one upsert per state (contextos.celery_results).
CELERY_RESULT_BACKEND = "contextos.celery_results:UpsertDatabaseBackend"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=7 * 24 * 3600)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1800)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1740)
# The task row records "running"; a STARTED result row per task would cost a
# write per task for nothing.
CELERY_TASK_TRACK_STARTED = False
CELERY_TASK_SEND_SENT_EVENT = False
# Task events are for Flower: it switches them on in every running worker
# (and in workers started later) while it watches. Publishing them when no
# monitor listens costs a third of a worker's main process per small task
# (profiled), so by default workers start with them off;
# CELERY_WORKER_SEND_TASK_EVENTS=true sends them always (another monitor).
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery force-closes database connections every this many tasks only (see
# contextos.worker): not around every task.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Periodic maintenance jobs (beat's heartbeat, recovery, rollups, purges) go to a
# queue of their own, which scripts/start-worker serves with a worker process of
# its own: user tasks holding every slot of the default worker cannot delay them.
CELERY_MAINTENANCE_QUEUE = env.str("CELERY_MAINTENANCE_QUEUE", default="maintenance")
CELERY_TASK_ROUTES = ("contextos.jobs.route_periodic_job",)
# The queues workers consume (scripts/start-worker reads the same variable);
# the staff health report shows their depth.
MONITORED_QUEUES = list(
    dict.fromkeys(
        [*env.list("CELERY_QUEUES", default=[CELERY_TASK_DEFAULT_QUEUE]), CELERY_MAINTENANCE_QUEUE]
    )
)
# The schedule lives in the database (django-celery-beat), created by
# ``manage.py setup_periodic_tasks`` and edited in the admin; nothing is
# declared here, since the scheduler would write it over staff edits.
CELERY_BEAT_SCHEDULER = "contextos.beat:DatabaseScheduler"

# --- Tasks ------------------------------------------------------------------
# Modules that register task types beyond each app's ``task_types``.
TASK_TYPE_MODULES = env.list("TASK_TYPE_MODULES", default=[])
# A running task that ignores its cancellation is terminated after this long.
TASK_CANCEL_GRACE_SECONDS = env.float("TASK_CANCEL_GRACE_SECONDS", default=10.0)
# Running this long past the time limit means its worker is gone.
TASK_STUCK_MARGIN_SECONDS = env.int("TASK_STUCK_MARGIN_SECONDS", default=300)
# A task whose message could not be published is sent again after this long.
TASK_REDISPATCH_AFTER_SECONDS = env.int("TASK_REDISPATCH_AFTER_SECONDS", default=30)
# A task still queued, unchanged, after this long is published once more: its
# message may have been lost with a killed worker (Redis broker).
TASK_REPUBLISH_QUEUED_AFTER_SECONDS = env.int("TASK_REPUBLISH_QUEUED_AFTER_SECONDS", default=3600)
# A non-staff user may have this many tasks queued or running at once (async AI
# interactions included), and this many prompts in their queued or running
# ai.batch tasks; a submission or retry past either is refused (429).
TASKS_MAX_ACTIVE_PER_USER = env.int("TASKS_MAX_ACTIVE_PER_USER", default=1000)
TASKS_MAX_BATCH_PROMPTS_PER_USER = env.int("TASKS_MAX_BATCH_PROMPTS_PER_USER", default=10000)

# --- Retention ---------------------------------------------------------------------
# Finished tasks and AI interactions older than this many days are deleted every
# night (the operations.purge-by-retention periodic task); 0 keeps them forever.
# Celery results expire after CELERY_RESULT_EXPIRES seconds (tasks.cleanup-results).
RETENTION_TASKS_DAYS = env.int("RETENTION_TASKS_DAYS", default=30)
RETENTION_INTERACTIONS_DAYS = env.int("RETENTION_INTERACTIONS_DAYS", default=90)
if min(RETENTION_TASKS_DAYS, RETENTION_INTERACTIONS_DAYS) < 0:
    raise ImproperlyConfigured(
        "RETENTION_TASKS_DAYS and RETENTION_INTERACTIONS_DAYS are days: 0 (keep forever) or more"
    )

# --- AI providers -----------------------------------------------------------------
# Models are "name:input_price:output_price" (USD per million tokens).
AI_DEFAULT_MODEL = env.str("AI_DEFAULT_MODEL", default="echo-1")
AI_ECHO_DELAY_MS = env.float("AI_ECHO_DELAY_MS", default=0.0)
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_MODELS = env.list("OPENAI_MODELS", default=[])
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_MODELS = env.list("ANTHROPIC_MODELS", default=[])
# Provider API keys are encrypted at rest with a key derived from this (else SECRET_KEY).
PROVIDER_KEYS_SECRET = env.str("PROVIDER_KEYS_SECRET", default="")
# A deployment cools down after this many failures in a row (or one 429), for this long.
ROUTING_COOLDOWN_FAILURES = env.int("ROUTING_COOLDOWN_FAILURES", default=3)
ROUTING_COOLDOWN_SECONDS = env.float("ROUTING_COOLDOWN_SECONDS", default=30.0)
# Each process re-reads the routing table's version in Redis at most this often.
ROUTING_TABLE_CHECK_SECONDS = env.float("ROUTING_TABLE_CHECK_SECONDS", default=1.0)
# Governance: each process re-reads changed limits at most this often; with Redis
# down, calls needing a budget or TPM check are refused (closed) or let through (open).
GOVERNANCE_CHECK_SECONDS = env.float("GOVERNANCE_CHECK_SECONDS", default=1.0)
GOVERNANCE_FAIL_MODE = env.str("GOVERNANCE_FAIL_MODE", default="closed")
if GOVERNANCE_FAIL_MODE not in {"closed", "open"}:
    raise ImproperlyConfigured(
        f"GOVERNANCE_FAIL_MODE={GOVERNANCE_FAIL_MODE!r}: use closed or open."
    )
# A call that sets no max_tokens is reserved against budgets as if it asked for this many.
GOVERNANCE_DEFAULT_MAX_TOKENS = env.int("GOVERNANCE_DEFAULT_MAX_TOKENS", default=4096)
# A reservation (and a parallel place) whose process died expires after this long.
GOVERNANCE_RESERVATION_SECONDS = env.int("GOVERNANCE_RESERVATION_SECONDS", default=600)
AI_PROVIDER_TIMEOUT = env.float("AI_PROVIDER_TIMEOUT", default=60.0)
AI_PROVIDER_MAX_ATTEMPTS = env.int("AI_PROVIDER_MAX_ATTEMPTS", default=3)
AI_RETRY_BASE_DELAY = env.float("AI_RETRY_BASE_DELAY", default=0.5)
AI_RETRY_MAX_DELAY = env.float("AI_RETRY_MAX_DELAY", default=8.0)
AI_CACHE_TTL = env.int("AI_CACHE_TTL", default=24 * 3600)
AI_MAX_PROMPT_CHARS = env.int("AI_MAX_PROMPT_CHARS", default=200_000)

# --- Metrics ----------------------------------------------------------------
# With a token, GET /metrics needs "Authorization: Bearer <token>". Without one it is
# open only while METRICS_PUBLIC is true: the default here, not in production.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=True)

# --- Sentry -------------------------------------------------------------------
# Errors (and a sample of traces) of web and workers, with prompts, answers and
# credentials scrubbed (contextos.sentry); off while SENTRY_DSN is empty.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from contextos import __version__
    from contextos.sentry import init_sentry

    init_sentry(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        release=env.str("SENTRY_RELEASE", default="") or f"contextos@{__version__}",
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )

# --- Logging ----------------------------------------------------------------
LOG_FORMATS = ("text", "json")


def log_format(default: str) -> str:
    """``LOG_FORMAT``: "text" (human-readable) or "json" (one object per line)."""
    value = env.str("LOG_FORMAT", default=default)
    if value not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be one of {LOG_FORMATS}, not {value!r}")
    return value


LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = log_format("text")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "contextos.logging.ContextFilter"},
        # While Redis is down, every request would log the same cache failure.
        "once_per_10s": {"()": "contextos.logging.OncePerInterval", "seconds": 10.0},
    },
    "formatters": {
        "text": {
            "()": "contextos.logging.TextFormatter",
            "format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "contextos.logging.JSONFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": LOG_FORMAT,
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
        # The providers' HTTP clients log every request at INFO: each attempt is
        # recorded on its interaction already, so only their warnings are kept.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "contextos.cache": {"filters": ["once_per_10s"]},
        "apps.ai_interactions.answer_cache": {"filters": ["once_per_10s"]},
    },
}
