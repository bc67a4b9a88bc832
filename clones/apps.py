from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate


class ClonesConfig(AppConfig):
    name = "clones"
    verbose_name = "Clones"

    def ready(self) -> None:
        from . import jobs, tasks, watches
        from .pipeline import archives

        post_migrate.connect(tasks.ensure_schedules, sender=self)
        post_delete.connect(archives.delete_with_row, sender="clones.CloneJob")
        jobs.snapshot_ended.connect(watches.snapshot_ended)
