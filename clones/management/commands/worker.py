"""`manage.py worker`: the django-q2 clusters, which stop gracefully on SIGTERM and SIGINT.

Two clusters, on one broker: the clones' (Q_CLUSTER's workers, its queue, and the schedules),
and beside it the webhooks' (CLONES_WEBHOOK_WORKERS workers on clones.notify.webhooks.QUEUE alone),
so that a receiver slow to answer holds a worker of its own cluster only, never one a clone needs.

django-q2's own Cluster stops from inside its signal handler, and the processes it forks die of
a SIGTERM (django-q2 issue 346). A SIGTERM to the whole process group, as systemd and
`kill -- -PGID` send it, killed the running clones outright and left the main process blocked
forever in that handler, waiting for a sentinel that was dead. Here the cluster's processes
ignore both signals, and the main process orchestrates the stop: its handler only records the
signal; the main thread announces the stop to the workers (clones/stopping.py), stops the
clusters and waits for them.
"""

import logging
import multiprocessing.connection
import signal
import tempfile
import uuid
from pathlib import Path

from django import db
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_q.brokers import get_broker
from django_q.cluster import Sentinel, get_mp_context
from django_q.conf import Conf

from clones import stopping
from clones.notify import webhooks
from clones.ops import recovery

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How soon the main thread notices a signal, or a sentinel that died.
POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = (
        "Run the clone workers and the webhook workers (two django-q2 clusters). Jobs and "
        "leftovers of dead workers are recovered first; on SIGTERM or SIGINT, running clones may "
        "finish within CLONES_STOP_GRACE seconds, and are handed back to the queue after that, "
        "or at once on a second signal."
    )

    def handle(self, *args, **options):
        # A worker restarted after a crash takes its lost jobs back at once, not at the next
        # sweep, and clears what they left.
        recovery.recover()
        stopping.announce_at(Path(tempfile.gettempdir()) / f"cloneshelf-stop-{uuid.uuid4()}")
        received = _record_stop_signals()
        # Each cluster opens its own: two sentinels forked with this process's connection would
        # talk over one socket at once.
        db.connections.close_all()
        clusters = [_start_cluster(kind) for kind in (_QuietSentinel, _WebhookSentinel)]
        sentinels = [sentinel for sentinel, _ in clusters]
        try:
            # A sentinel that died takes the other cluster down too: the worker exits in error,
            # for its supervisor to start it again whole.
            _wait_for_stop_signal(sentinels, received)
            _stop_clusters(clusters, received)
        finally:
            stopping.forget()
            # Python gives its handlers back to the default as it exits, so a signal still on its
            # way (a second SIGTERM to the group) would kill the worker it no longer concerns.
            _ignore_stop_signals()
        for sentinel in sentinels:
            if sentinel.exitcode != 0:
                raise CommandError(f"A cluster's sentinel exited with code {sentinel.exitcode}.")


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


class _WebhookSentinel(_QuietSentinel):
    """The webhooks' cluster: CLONES_WEBHOOK_WORKERS workers on their own queue, whose tasks
    take at most CLONES_WEBHOOK_TIMEOUT."""

    def __init__(self, stop_event, start_event, cluster_id):
        broker = get_broker(webhooks.QUEUE)
        timeout = settings.CLONES_WEBHOOK_TIMEOUT
        super().__init__(stop_event, start_event, cluster_id, broker, timeout)

    def start(self):
        self.pool_size = settings.CLONES_WEBHOOK_WORKERS
        # The clones' cluster runs the schedules: django-q2 would queue the ones without a queue
        # of their own (the recovery sweep's) onto this cluster's. Its own process's Conf.
        Conf.SCHEDULER = False
        super().start()


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


def _start_cluster(kind: type[Sentinel]):
    """The process of a sentinel of this kind, started, and the event that tells it to stop."""
    context = get_mp_context()
    stop_event = context.Event()
    sentinel = context.Process(
        target=kind,
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


def _wait_for_stop_signal(sentinels: list, received: list[int]) -> None:
    """Return once a stop signal came, or a sentinel died."""
    while not received:
        _pause(sentinels)
        for sentinel in sentinels:
            if sentinel.exitcode is not None:
                logger.error("a cluster's sentinel died (exit code %s)", sentinel.exitcode)
                return


def _stop_clusters(clusters: list, received: list[int]) -> None:
    """Let running clones finish within their grace period, or hand them back at once when a
    further signal comes; return when every process of the clusters has exited."""
    stopping.announce()
    logger.info("stopping: running clones have %d s to finish", settings.CLONES_STOP_GRACE)
    for sentinel, stop_event in clusters:
        # Not a dead one's: setting an event waits for every process waiting on it to wake.
        if sentinel.exitcode is None:
            stop_event.set()
    sentinels = [sentinel for sentinel, _ in clusters]
    handled = 1
    while any(sentinel.exitcode is None for sentinel in sentinels):
        _pause(sentinels)
        if len(received) > handled:
            handled = len(received)
            stopping.hurry()
            logger.warning("asked again: running clones are stopped and handed back now")
    logger.info("stopped")


def _pause(sentinels: list) -> None:
    """POLL_SECONDS, or less if a sentinel exits meanwhile: short, as a signal does not
    interrupt the wait."""
    running = [sentinel.sentinel for sentinel in sentinels if sentinel.exitcode is None]
    multiprocessing.connection.wait(running, POLL_SECONDS)
