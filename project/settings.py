"""cloneshelf settings. Every value comes from an environment variable; the README has the table."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string, "
            "or set DJANGO_DEBUG=1 for a local development run."
        )
    SECRET_KEY = "insecure-development-key-only-for-DJANGO_DEBUG"
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
]

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
            ],
        },
    },
]

# --- Data: the volume shared by the worker and the Docker engine -----------------------------
# The app and the engine may see the same volume at different paths (docker-in-docker): bind
# mounts are resolved on the engine's filesystem, so clones.paths translates between the two.
CLONES_DATA_DIR = Path(env_str("CLONES_DATA_DIR", str(BASE_DIR / "data"))).resolve()
CLONES_ENGINE_DATA_DIR = Path(env_str("CLONES_ENGINE_DATA_DIR", str(CLONES_DATA_DIR)))
MEDIA_ROOT = CLONES_DATA_DIR / "archives"
MEDIA_URL = "/media/"  # never served: archives go out through the download view only


def database_config() -> dict:
    url = env_str("DATABASE_URL", "")
    if url:
        config = dj_database_url.parse(url, conn_max_age=60)
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


DATABASES = {"default": database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
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
CLONES_CLONE_TIMEOUT = env_int("CLONES_CLONE_TIMEOUT", 600)
CLONES_ARCHIVE_TTL_HOURS = env_int("CLONES_ARCHIVE_TTL_HOURS", 168)
CLONES_EXPIRY_INTERVAL_MINUTES = env_int("CLONES_EXPIRY_INTERVAL_MINUTES", 10)

# --- Queue (django-q2, ORM broker: no extra service) ------------------------------------------
# A task may spend CLONES_CLONE_TIMEOUT in git, plus an image pull and packing the archive.
# django-q2 kills a task at "timeout" and hands an unacknowledged one to another worker at
# "retry", so: clone timeout < task timeout < retry. The CloneJob row, not django-q2, records
# whether a clone worked; a failed task is acknowledged and never retried blindly.
CLONES_TASK_TIMEOUT = CLONES_CLONE_TIMEOUT + env_int("CLONES_TASK_OVERHEAD", 600)
Q_CLUSTER = {
    "name": "cloneshelf",
    "orm": "default",
    "workers": env_int("CLONES_WORKERS", 2),
    "timeout": CLONES_TASK_TIMEOUT,
    "retry": CLONES_TASK_TIMEOUT + 60,
    "max_attempts": 2,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
}

# --- Deployment behind TLS ---------------------------------------------------------------------
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
