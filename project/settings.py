"""cloneshelf settings. Every value comes from an environment variable; the README has the table."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "a whole number")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def _env_number(name: str, default, kind: type, described: str):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not {described}") from None


def env_choice(name: str, default: str, choices: list[str]) -> str:
    value = env_str(name, default).strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def env_bytes(name: str, default: str) -> int:
    """A size in bytes, with an optional k/m/g/t suffix (powers of 1024): "512m", "2g"."""
    value = env_str(name, default).strip().lower().removesuffix("b").removesuffix("i")
    number, unit = value.rstrip("kmgt"), value[len(value.rstrip("kmgt")) :]
    if not number.isdigit() or unit not in BYTE_UNITS:
        raise ImproperlyConfigured(f"{name}={value!r} is not a size such as 1048576, 512m or 2g")
    return int(number) * BYTE_UNITS[unit]


DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "ninja",  # only for the docs page's Swagger UI files (no CDN): clones/web/api.py
    "axes",  # locks logins out after failures (below)
    "clones",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Content-Security-Policy on every page: scripts and styles from this site's own files only (the
# site's pages, the admin and the API docs' Swagger UI have no inline script; the admin's one
# <style> carries the nonce), images also as data: URIs (Swagger UI's icons in its CSS), nothing
# framed, no plugins, forms sent only here. tests/test_browser.py fails on any blocked load.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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
                "django.template.context_processors.csp",  # the nonce, for the admin's <style>
            ],
        },
    },
]

# --- Data: the volume shared by the worker and the Docker engine -----------------------------
# The app and the engine may see the same volume at different paths (docker-in-docker): bind
# mounts are resolved on the engine's filesystem, so clones.pipeline.paths translates between the
# two.
CLONES_DATA_DIR = Path(env_str("CLONES_DATA_DIR", str(BASE_DIR / "data"))).resolve()


def kept_secret_key(path: Path) -> str:
    """The secret key in `path`, made on the first start (mode 0600): with no DJANGO_SECRET_KEY
    a first start needs no step before it, and sessions outlive restarts. Made whole, then
    linked into place, so that a web process and a worker starting together read one key."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.touch(mode=0o600)
    draft.write_text(secrets.token_urlsafe(50))
    try:
        os.link(draft, path)  # fails if another process linked its own first: that one wins
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or kept_secret_key(CLONES_DATA_DIR / "secret_key")
CLONES_ENGINE_DATA_DIR = Path(env_str("CLONES_ENGINE_DATA_DIR", str(CLONES_DATA_DIR)))
MEDIA_ROOT = CLONES_DATA_DIR / "archives"
MEDIA_URL = "/media/"  # never served: archives go out through the download view only
# Who sends an archive's bytes: "" (Django streams them, with ranges and conditional requests),
# or a front server told which file by a header (clones.web.downloads): "nginx" (X-Accel-Redirect to
# CLONES_SENDFILE_PREFIX + the archive's name, an `internal` location aliasing MEDIA_ROOT) or
# "apache" (mod_xsendfile: X-Sendfile with the file's path).
CLONES_SENDFILE = env_str("CLONES_SENDFILE", "").strip().lower()
if CLONES_SENDFILE not in {"", "nginx", "apache"}:
    # Not env_choice: its message cannot name the empty default.
    raise ImproperlyConfigured(
        f"CLONES_SENDFILE={CLONES_SENDFILE!r} is not nginx, apache, or empty (Django sends files)"
    )
CLONES_SENDFILE_PREFIX = env_str("CLONES_SENDFILE_PREFIX", "/protected-archives/")
if not (CLONES_SENDFILE_PREFIX.startswith("/") and CLONES_SENDFILE_PREFIX.endswith("/")):
    # The archive's name is appended to it: without both slashes the URI misses the location.
    raise ImproperlyConfigured(
        f"CLONES_SENDFILE_PREFIX={CLONES_SENDFILE_PREFIX!r} is not a path that starts and ends "
        "with /, like /protected-archives/"
    )


def database_config(url: str) -> dict:
    """The database at `url`; SQLite in the data directory if it is empty."""
    if url:
        # Connections are kept a minute, and checked before a task or request first uses one:
        # a connection the server closed meanwhile (a restart) is replaced, not handed out.
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    else:
        # SQLite creates its file but not the directory; a first run starts with neither.
        CLONES_DATA_DIR.mkdir(parents=True, exist_ok=True)
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": CLONES_DATA_DIR / "db.sqlite3"}
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # The web process and the django-q2 ORM broker write to one file at once. WAL lets
        # readers go on during a write, IMMEDIATE takes the write lock up front (no deadlock on
        # lock upgrade), and the timeout makes writers wait instead of "database is locked".
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


DATABASES = {"default": database_config(env_str("DATABASE_URL", ""))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Archives: files under MEDIA_ROOT, or objects in an S3-compatible bucket (django-storages;
# credentials and region from the standard AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
# AWS_DEFAULT_REGION, which boto3 reads itself). Downloads from S3 are redirects to a presigned
# URL that lives CLONES_S3_URL_SECONDS.
CLONES_S3_BUCKET = env_str("CLONES_S3_BUCKET", "")
CLONES_S3_ENDPOINT_URL = env_str("CLONES_S3_ENDPOINT_URL", "")
CLONES_S3_URL_SECONDS = env_int("CLONES_S3_URL_SECONDS", 300)
ARCHIVE_STORAGE = (
    {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CLONES_S3_BUCKET,
            "endpoint_url": CLONES_S3_ENDPOINT_URL or None,
            "querystring_expire": CLONES_S3_URL_SECONDS,
            "file_overwrite": False,  # a name is never reused: archives.store picks a free one
        },
    }
    if CLONES_S3_BUCKET
    else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
)
STORAGES = {
    "default": ARCHIVE_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Logins (the site's and the admin's) are locked out after CLONES_LOGIN_FAILURES failures in a
# row for one user name from one address, for CLONES_LOGIN_LOCKOUT_MINUTES (django-axes; its
# failures are kept in the database, so every web process counts them together). By name and
# address together, so that nobody can lock another person out from elsewhere; behind the TLS
# proxy the address is the one it appended to X-Forwarded-For (clones.web.views.client_address),
# or every address would be the proxy's and anyone could lock any name out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
CLONES_LOGIN_FAILURES = env_int("CLONES_LOGIN_FAILURES", 5)
CLONES_LOGIN_LOCKOUT_MINUTES = env_int("CLONES_LOGIN_LOCKOUT_MINUTES", 15)
AXES_FAILURE_LIMIT = CLONES_LOGIN_FAILURES
AXES_COOLOFF_TIME = timedelta(minutes=CLONES_LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # failures "in a row": a login that works starts the count again
AXES_LOCKOUT_CALLABLE = "clones.web.views.locked_out"
AXES_CLIENT_IP_CALLABLE = "clones.web.views.client_address"
AXES_DISABLE_ACCESS_LOG = True  # failures only: no record of every successful login
AXES_VERBOSE = False  # no banner in the log of every process and command at start
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "clones:new"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}

# --- Cloning ---------------------------------------------------------------------------------
CLONES_GIT_IMAGE = env_str("CLONES_GIT_IMAGE", "alpine/git:v2.52.0")
CLONES_NETWORK = env_str("CLONES_NETWORK", "bridge")
CLONES_ALLOWED_SCHEMES = env_list("CLONES_ALLOWED_SCHEMES", "https")
CLONES_ALLOW_PRIVATE_NETWORKS = env_bool("CLONES_ALLOW_PRIVATE_NETWORKS", False)
# Internal git servers an operator trusts: host names and addresses or CIDR networks.
CLONES_ALLOWED_PRIVATE_HOSTS = env_list("CLONES_ALLOWED_PRIVATE_HOSTS", "")


def env_ports(name: str, default: str) -> dict[str, set[int] | None]:
    """ "https:443,http:80,git:9418" -> {"https": {443}, ...}; a port of "*" allows any."""
    ports: dict[str, set[int] | None] = {}
    for item in env_list(name, default):
        scheme, _, port = item.partition(":")
        if port == "*":
            ports[scheme.lower()] = None
        elif port.isdigit() and 0 < int(port) < 65536:
            allowed = ports.setdefault(scheme.lower(), set())
            if allowed is not None:
                allowed.add(int(port))
        else:
            raise ImproperlyConfigured(f"{name}: {item!r} is not scheme:port or scheme:*")
    return ports


CLONES_ALLOWED_PORTS = env_ports("CLONES_ALLOWED_PORTS", "https:443,http:80,git:9418")
# The egress proxy (clones.safety.egress) that submodules are fetched through: where the
# worker's proxies listen (empty: none, and submodules are refused), and the worker's address as
# clone containers reach it (a name is resolved by the worker; empty: the same as the first).
CLONES_EGRESS_BIND = env_str("CLONES_EGRESS_BIND", "")
CLONES_EGRESS_HOST = env_str("CLONES_EGRESS_HOST", "")
CLONES_SUBMODULE_LEVELS = env_int("CLONES_SUBMODULE_LEVELS", 4)
if CLONES_SUBMODULE_LEVELS < 1:
    raise ImproperlyConfigured("CLONES_SUBMODULE_LEVELS: at least 1 (a level of submodules)")
# An SSH host whose key no admin has added: on, the key it first offers is taken and recorded
# (KnownHost, marked so) instead of the clone being refused. Off by default: on, whoever is in
# the middle of that first connection would be trusted from then on.
CLONES_SSH_TRUST_ON_FIRST_USE = env_bool("CLONES_SSH_TRUST_ON_FIRST_USE", False)
CLONES_CLONE_TIMEOUT = env_int("CLONES_CLONE_TIMEOUT", 600)
# How git checks the objects a server sends (clones.pipeline.cloning.fsck_config): "strict" refuses
# every fsck finding, "standard" lets the legacy oddities of old histories through as warnings,
# "off" checks nothing.
CLONES_FSCK = env_choice("CLONES_FSCK", "standard", ["strict", "standard", "off"])
CLONES_ARCHIVE_TTL_HOURS = env_int("CLONES_ARCHIVE_TTL_HOURS", 168)
CLONES_EXPIRY_INTERVAL_MINUTES = env_int("CLONES_EXPIRY_INTERVAL_MINUTES", 10)

# --- Limits: what one clone may take ------------------------------------------------------------
# The worker watches the job directory while git runs and stops the container past these.
CLONES_MAX_REPO_BYTES = env_bytes("CLONES_MAX_REPO_BYTES", "2g")
CLONES_MAX_REPO_FILES = env_int("CLONES_MAX_REPO_FILES", 250_000)
# A job waits (stays queued) while the data volume has less than this free: a clone and its
# archive together need about twice the repository's size.
CLONES_MIN_FREE_BYTES = env_bytes("CLONES_MIN_FREE_BYTES", "5g")
# git gives up on a connection slower than this many bytes/s for this many seconds.
CLONES_LOW_SPEED_BYTES = env_int("CLONES_LOW_SPEED_BYTES", 1000)
CLONES_LOW_SPEED_SECONDS = env_int("CLONES_LOW_SPEED_SECONDS", 60)
# The clone container. The user must be able to write job directories and be one the worker
# can delete files of: empty means the worker's own uid:gid, or 65534:65534 (nobody) if the
# worker runs as root, which then hands each job directory to that user.
CLONES_CONTAINER_USER = env_str("CLONES_CONTAINER_USER", "")
CLONES_CONTAINER_MEMORY = env_bytes("CLONES_CONTAINER_MEMORY", "1g")
CLONES_CONTAINER_CPUS = env_float("CLONES_CONTAINER_CPUS", 0)  # 0: no quota, equal weights
CLONES_CONTAINER_PIDS = env_int("CLONES_CONTAINER_PIDS", 256)
CLONES_CONTAINER_NOFILE = env_int("CLONES_CONTAINER_NOFILE", 1024)
CLONES_CONTAINER_TMPFS = env_bytes("CLONES_CONTAINER_TMPFS", "64m")
CLONES_CONTAINER_LOG_BYTES = env_bytes("CLONES_CONTAINER_LOG_BYTES", "1m")

# The keys that sign archives' provenance (clones.safety.signing): a file of PEM private keys, the
# newest first; empty: `signing_keys` on the data volume, made on first use.
CLONES_SIGNING_KEYS_FILE = env_str("CLONES_SIGNING_KEYS_FILE", "")

# --- Abuse: what one person, and everyone together, may ask for ----------------------------------
CLONES_MAX_ACTIVE_PER_USER = env_int("CLONES_MAX_ACTIVE_PER_USER", 5)
CLONES_MAX_SUBMISSIONS_PER_HOUR = env_int("CLONES_MAX_SUBMISSIONS_PER_HOUR", 60)
CLONES_MAX_QUEUED = env_int("CLONES_MAX_QUEUED", 500)
# Submissions refused for their URL or webhook URL in an hour, after which that person's URLs are
# not checked (nor their hosts resolved) until the oldest refusal is an hour old: the policy's
# answers would otherwise map internal names (clones.jobs.check_refusals).
CLONES_MAX_REFUSED_PER_HOUR = env_int("CLONES_MAX_REFUSED_PER_HOUR", 20)

# --- Watches: repositories followed over time (clones.watches, clones.retention) -----------------
# A watch is checked at most this often, whatever its owner asks.
CLONES_WATCH_MIN_INTERVAL_MINUTES = env_int("CLONES_WATCH_MIN_INTERVAL_MINUTES", 5)
CLONES_MAX_WATCHES_PER_USER = env_int("CLONES_MAX_WATCHES_PER_USER", 500)
# A watch that fails this many checks (or snapshots) in a row is told to its webhook and owner.
CLONES_WATCH_FAILURES_TO_TELL = env_int("CLONES_WATCH_FAILURES_TO_TELL", 3)
# The bytes of archives one person keeps (one-off and watched), unless their profile says
# otherwise; a build past it fails with its own message. 0: no quota.
CLONES_USER_QUOTA_BYTES = env_bytes("CLONES_USER_QUOTA_BYTES", "10g")
# The incremental mirror cache (clones.pipeline.mirrors): least recently used mirrors are evicted
# past this many bytes.
CLONES_MIRROR_MAX_BYTES = env_bytes("CLONES_MIRROR_MAX_BYTES", "20g")

# --- Waiting: a job that cannot start yet (engine down, disk full) stays queued ------------------
# It is tried again after CLONES_WAIT_SECONDS, doubling each time up to 10 minutes, and fails
# after CLONES_WAIT_RETRIES waits.
CLONES_WAIT_SECONDS = env_int("CLONES_WAIT_SECONDS", 30)
CLONES_WAIT_RETRIES = env_int("CLONES_WAIT_RETRIES", 8)

# --- Notifications: when a job ends, its webhook (clones.notify.webhooks) and an email to its owner
# The site's own address, for absolute links in webhooks and emails; empty: links are paths.
CLONES_SITE_URL = env_str("CLONES_SITE_URL", "").strip().rstrip("/")
if CLONES_SITE_URL and not CLONES_SITE_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured(
        f"CLONES_SITE_URL={CLONES_SITE_URL!r} is not an address such as "
        "https://cloneshelf.example.org"
    )
# A webhook that fails is tried again after CLONES_WEBHOOK_BACKOFF_SECONDS, doubling each time
# (up to an hour), CLONES_WEBHOOK_RETRIES times.
CLONES_WEBHOOK_RETRIES = env_int("CLONES_WEBHOOK_RETRIES", 5)
CLONES_WEBHOOK_BACKOFF_SECONDS = env_int("CLONES_WEBHOOK_BACKOFF_SECONDS", 30)
# The most one attempt may take, however slowly the receiver answers (clones.notify.webhooks).
CLONES_WEBHOOK_TIMEOUT = env_int("CLONES_WEBHOOK_TIMEOUT", 30)
# Attempts run in a cluster of their own that `manage.py worker` starts beside the clones' (on
# the queue clones.notify.webhooks.QUEUE), so a slow receiver never holds a worker that a clone
# needs.
CLONES_WEBHOOK_WORKERS = env_int("CLONES_WEBHOOK_WORKERS", 2)
# A job that ends while its owner has this many deliveries pending is not told (its delivery
# fails at once, saying why): one user's slow receiver holds at most this many in the queue.
CLONES_MAX_PENDING_WEBHOOKS_PER_USER = env_int("CLONES_MAX_PENDING_WEBHOOKS_PER_USER", 10)
# Private receivers an operator trusts (host names, addresses, CIDR networks), as
# CLONES_ALLOWED_PRIVATE_HOSTS for git servers: the git servers' allowances never apply to
# webhooks, whose answers a job's owner sees.
CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS = env_list("CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS", "")


def smtp_mailers() -> dict:
    """Django's default mailer: SMTP, as the EMAIL_* variables say."""
    use_tls = env_bool("EMAIL_USE_TLS", False)
    options = {
        "host": env_str("EMAIL_HOST", ""),
        "port": env_int("EMAIL_PORT", 587 if use_tls else 25),
        "username": env_str("EMAIL_HOST_USER", ""),
        "password": env_str("EMAIL_HOST_PASSWORD", ""),
        "use_tls": use_tls,
        "timeout": 10,  # Django's default waits for ever: a hung mail server would hold a worker
    }
    smtp = "django.core.mail.backends.smtp.EmailBackend"
    return {"default": {"BACKEND": smtp, "OPTIONS": options}}


# Email goes out only when EMAIL_HOST names a mail server (clones.notify.email asks whether
# there is a default mailer). Without one, MAILERS stays undefined: an empty one is a warning.
if env_str("EMAIL_HOST", ""):
    MAILERS = smtp_mailers()
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "cloneshelf@localhost")

# --- Recovery: nothing stuck, nothing leaked -----------------------------------------------------
# A running job's worker refreshes its heartbeat every CLONES_HEARTBEAT_SECONDS; one silent for
# four of them lost its worker (killed, or its machine died). The recovery sweep, run every
# CLONES_RECOVERY_INTERVAL_MINUTES, queues it once more, or fails it after its second attempt.
CLONES_HEARTBEAT_SECONDS = env_int("CLONES_HEARTBEAT_SECONDS", 5)
CLONES_RECOVERY_INTERVAL_MINUTES = env_int("CLONES_RECOVERY_INTERVAL_MINUTES", 1)
# On SIGTERM (`manage.py worker`), a clone still running after this many seconds is stopped and
# handed back to the queue; compose's stop_grace_period must be longer.
CLONES_STOP_GRACE = env_int("CLONES_STOP_GRACE", 60)

# --- Queue (django-q2, ORM broker: no extra service) ------------------------------------------
# A task may spend CLONES_CLONE_TIMEOUT in git, plus an image pull and packing the archive.
# django-q2 kills a task at "timeout" and hands an unacknowledged one to another worker at
# "retry", so: clone timeout < task timeout < retry. The CloneJob row, not django-q2, records
# whether a clone worked; a failed task is acknowledged and never retried blindly. A task that
# finds the database unreachable waits for it instead of failing (clones.ops.outages).
CLONES_TASK_TIMEOUT = CLONES_CLONE_TIMEOUT + env_int("CLONES_TASK_OVERHEAD", 600)
# The queue: in the database (django-q2's ORM broker) unless a Redis URL is given.
CLONES_REDIS_URL = env_str("CLONES_REDIS_URL", "")
# A queued job whose task has not reached a worker this long after it was due is given another
# (the broker lost it: Redis has no acknowledgement). A duplicate in a long queue is harmless.
CLONES_TASK_LOST_SECONDS = env_int("CLONES_TASK_LOST_SECONDS", 600)

Q_CLUSTER = {
    "name": "cloneshelf",
    **({"redis": CLONES_REDIS_URL} if CLONES_REDIS_URL else {"orm": "default"}),
    "workers": env_int("CLONES_WORKERS", 2),
    "timeout": CLONES_TASK_TIMEOUT,
    "retry": CLONES_TASK_TIMEOUT + 60,
    "max_attempts": 2,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    # How long an idle cluster waits between looks at the queue: a job waits half of it on
    # average before it starts. One indexed SELECT a look; at 0.5 s, a small clone took twice
    # as long (scripts/bench_clone.py --megabytes 1: 0.83 s against 0.43 s, median of 5).
    "poll": 0.1,
}

# --- Deployment behind TLS ---------------------------------------------------------------------
# DJANGO_HTTPS says the site is reached over https (compose turns it on); each protection it
# implies can still be switched on its own.
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
# Compose's healthcheck asks for /healthz over plain http on localhost inside the container,
# where no proxy adds X-Forwarded-Proto: a redirect to https would fail it.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
# HSTS for the site's own subdomains only (clones.example.com covers *.clones.example.com).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
BEHIND_TLS_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY", HTTPS)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The HSTS preload list takes registrable domains, submitted by hand: not ours to decide.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
