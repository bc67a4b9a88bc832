"""Riding out a database that is unreachable for a while (restarted, failed over, cut off).

django-q2 counts a task that raised as done and failed (ack_failures) and never runs it again,
so a task that met an unreachable database waits here until it answers, then goes on. Django
keeps a connection that failed until something closes it: between requests or tasks it is
checked, but within a task (or a thread of one) every query on it fails, long after the server
is back. Waiting closes it first.
"""

import functools
import logging
import time

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

# What Django raises when the server refused or dropped the connection (or, with SQLite, stayed
# locked past its timeout): transient. Other database errors (a constraint, bad SQL) are bugs.
UNREACHABLE = (OperationalError, InterfaceError)
# The longest a task waits for the database; past that it fails, and the recovery sweep makes up
# for it (CLONES_TASK_LOST_SECONDS, the heartbeat).
WAIT_SECONDS = 600
POLL_SECONDS = 1


def wait_for_database(deadline: float | None = None) -> None:
    """Return once the database takes a connection again; raise what it said last if it still
    does not at `deadline` (time.monotonic(); WAIT_SECONDS from now by default)."""
    if deadline is None:
        deadline = time.monotonic() + WAIT_SECONDS
    while True:
        connection.close()  # the failed one is no use: the next query opens a new one
        try:
            connection.ensure_connection()
            return
        except UNREACHABLE:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL_SECONDS)


def ridden_out(task):
    """Decorate a django-q2 task that is safe to run twice: should the database be unreachable,
    it runs again once the database answers, instead of being done with as failed."""

    @functools.wraps(task)
    def run(*args, **kwargs):
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                return task(*args, **kwargs)
            except UNREACHABLE:
                if time.monotonic() >= deadline:
                    raise
                logger.warning(
                    "%s: the database is unreachable; running it again once it answers",
                    task.__qualname__,
                    exc_info=True,
                )
                wait_for_database(deadline)

    return run
