import signal
import tempfile
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand
from django_q.cluster import Cluster

from clones import recovery, stopping


class Command(BaseCommand):
    help = (
        "Run the clone workers (a django-q2 cluster). Leftovers of dead workers are cleaned up "
        "first; on SIGTERM, running clones may finish within CLONES_STOP_GRACE seconds, and "
        "are handed back to the queue after that."
    )

    def handle(self, *args, **options):
        recovery.reap_leftovers()
        stopping.announce_at(Path(tempfile.gettempdir()) / f"cloneshelf-stop-{uuid.uuid4()}")
        cluster = Cluster()  # installs its own SIGTERM/SIGINT handler, which stops it

        def stop(signum, frame) -> None:
            stopping.announce()
            cluster.sig_handler(signum, frame)  # returns when every worker has finished
            stopping.forget()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        cluster.start()
