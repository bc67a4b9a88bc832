"""Settings for the scripts: tests.settings, with the time and process id on every log line, so
that the logs of the workers a script starts can be read as a history."""

from tests.settings import *  # noqa: F403

LOGGING = {
    **LOGGING,  # noqa: F405
    "formatters": {
        "timed": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "timed"}},
}

# Connections kept between requests, as production's DATABASE_URL gets them (project.settings):
# the tests' SQLite settings open one per request, which is not what a load would meet.
DATABASES["default"]["CONN_MAX_AGE"] = 60  # noqa: F405
