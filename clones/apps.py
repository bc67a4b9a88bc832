from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate


class ClonesConfig(AppConfig):
    name = "clones"
    verbose_name = "Clones"

    def ready(self) -> None:
        from .ops import schedules as signals

        post_migrate.connect(signals.ensure_schedules, sender=self)
        post_delete.connect(signals.delete_archive_file, sender="clones.CloneJob")
