"""`manage.py worker`: a django-q2 cluster that stops gracefully on SIGTERM and SIGINT.

django-q2's own Cluster stops from inside its signal handler, and the processes it forks die of
a SIGTERM (django-q2 issue 346). A SIGTERM to the whole process group, as systemd and
`kill -- -PGID` send it, killed the running clones outright and left the main process blocked
forever in that handler, waiting for a sentinel that was dead. Here the cluster's processes
ignore both signals, and the main process orchestrates the stop: its handler only records the
signal; the main thread announces the stop to the workers (clones/stopping.py), stops the
cluster and waits for it.
"""

import logging
import signal
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_q.cluster import Sentinel, get_mp_context

from clones import recovery, stopping

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How soon the main thread notices a signal, or a sentinel that died.
POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = (
        "Run the clone workers (a django-q2 cluster). Jobs and leftovers of dead workers are "
        "recovered first; on SIGTERM or SIGINT, running clones may finish within CLONES_STOP_GRACE "
        "seconds, and are handed back to the queue after that, or at once on a second signal."
    )

    def handle(self, *args, **options):
        # A worker restarted after a crash takes its lost jobs back at once, not at the next
        # sweep, and clears what they left.
        recovery.recover()
        stopping.announce_at(Path(tempfile.gettempdir()) / f"cloneshelf-stop-{uuid.uuid4()}")
        received = _record_stop_signals()
        sentinel, stop_event = _start_cluster()
        try:
            if _wait_for_stop_signal(sentinel, received):
                _stop_cluster(sentinel, stop_event, received)
        finally:
            stopping.forget()
            # Python gives its handlers back to the default as it exits, so a signal still on its
            # way (a second SIGTERM to the group) would kill the worker it no longer concerns.
            _ignore_stop_signals()
        if sentinel.exitcode != 0:
            raise CommandError(f"The cluster's sentinel exited with code {sentinel.exitcode}.")


class _QuietSentinel(Sentinel):
    """django-q2's sentinel, deaf to SIGTERM and SIGINT along with every process it forks:
    stopping is the main process's business."""

    def start(self):
        # Sentinel.__init__ has just made SIGTERM fatal to it. The workers, monitor and pusher
        # are forked from here on, and inherit what is set now.
        _ignore_stop_signals()  # also drops any that came while held
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        super().start()

    def spawn_process(self, target, *args):
        process = super().spawn_process(target, *args)
        # django-q2 SIGTERMs a worker stuck past its task timeout, and multiprocessing what is
        # left when the sentinel exits; both would now be ignored, so they get SIGKILL instead.
        process._popen.terminate = process._popen.kill
        return process


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _record_stop_signals() -> list[int]:
    """The stop signals received so far. The handler does nothing else: it may interrupt the
    main thread anywhere, even inside the multiprocessing calls that stop the cluster."""
    received: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    return received


def _start_cluster():
    """The sentinel's process, started, and the event that tells it to stop."""
    context = get_mp_context()
    stop_event = context.Event()
    sentinel = context.Process(
        target=_QuietSentinel,
        args=(stop_event, context.Event(), uuid.uuid4()),
        name=f"Process-{uuid.uuid4().hex}",
    )
    # Held until the sentinel ignores them: Sentinel.__init__ makes SIGTERM fatal first.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        sentinel.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return sentinel, stop_event


def _wait_for_stop_signal(sentinel, received: list[int]) -> bool:
    """True once a stop signal came; False if the sentinel died first."""
    while not received:
        sentinel.join(POLL_SECONDS)
        if sentinel.exitcode is not None:
            logger.error("the cluster's sentinel died (exit code %s)", sentinel.exitcode)
            return False
    return True


def _stop_cluster(sentinel, stop_event, received: list[int]) -> None:
    """Let running clones finish within their grace period, or hand them back at once when a
    further signal comes; return when every process of the cluster has exited."""
    stopping.announce()
    logger.info("stopping: running clones have %d s to finish", settings.CLONES_STOP_GRACE)
    stop_event.set()
    handled = 1
    while sentinel.exitcode is None:
        sentinel.join(POLL_SECONDS)  # short: a signal does not interrupt join()
        if len(received) > handled:
            handled = len(received)
            stopping.hurry()
            logger.warning("asked again: running clones are stopped and handed back now")
    logger.info("stopped")
