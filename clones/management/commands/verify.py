import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from clones import verifier
from clones.models import Snapshot
from clones.safety import signing


class Command(BaseCommand):
    help = (
        "Verify an archive against its signed provenance and this service's published keys (as "
        "clones/verifier.py does anywhere); without PROVENANCE, the one this service keeps."
    )

    def add_arguments(self, parser):
        parser.add_argument("archive", type=Path)
        parser.add_argument("provenance", type=Path, nargs="?")
        parser.add_argument("--tree", action="store_true", help="and unpack it to check its tree")

    def handle(self, *args, archive: Path, provenance: Path | None, tree: bool, **options):
        if not archive.is_file():
            raise CommandError(f"{archive} is not a file.")
        envelope = _read(provenance) if provenance else _kept(archive)
        keys = verifier.load_keys(signing.published())
        try:
            self.stdout.write(verifier.report(archive, envelope, keys, tree))
        except verifier.NotVerified as failed:
            raise CommandError(f"NOT verified: {failed}") from None


def _read(provenance: Path) -> dict:
    try:
        return json.loads(provenance.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{provenance} is not a provenance file: {exc}") from None


def _kept(archive: Path) -> dict:
    digest = verifier.sha256_of(archive)
    kept = Snapshot.objects.filter(archive_sha256=digest, provenance__isnull=False)
    snapshot = kept.first()
    if snapshot is None:
        raise CommandError(
            f"This service has no provenance for an archive of sha256 {digest}: give the "
            "provenance file."
        )
    return snapshot.provenance
