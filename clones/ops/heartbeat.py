"""A running job's sign of life: its worker refreshes `heartbeat_at` every
CLONES_HEARTBEAT_SECONDS, from a thread of its own, so that a long step (an image pull, packing
gigabytes) still shows the worker alive. A killed worker stops beating, and the recovery sweep
takes its job back within a minute or so (CloneJob.objects.lost()), instead of waiting out the
task timeout."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from ..models import CloneJob

logger = logging.getLogger(__name__)


@contextmanager
def beating(job: CloneJob) -> Iterator[None]:
    """Keep `job`'s heartbeat fresh while the block runs (the job was just claimed, which beat)."""
    stop = threading.Event()
    thread = threading.Thread(target=_beat, args=(job, stop), name=f"heartbeat {job.id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _beat(job: CloneJob, stop: threading.Event) -> None:
    try:
        while not stop.wait(settings.CLONES_HEARTBEAT_SECONDS):
            try:
                # Only this attempt's: a job recovered from under us must not look alive.
                CloneJob.objects.attempt(job).update(heartbeat_at=timezone.now())
            except DatabaseError:
                # A busy or restarting database: the next beat tries again, well before the job
                # looks lost, on a new connection (Django would keep handing out the failed one).
                logger.warning("could not record the heartbeat of job %s", job.id, exc_info=True)
                connection.close()
    finally:
        connection.close()  # this thread's own connection
