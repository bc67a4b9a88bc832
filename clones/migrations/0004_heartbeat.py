from django.db import migrations, models
from django.db.models import F


def beat_at_start(apps, schema_editor):
    """Jobs running across the upgrade have no heartbeat yet: count from their start, so that
    the sweep takes them back if their worker is gone."""
    CloneJob = apps.get_model("clones", "CloneJob")
    CloneJob.objects.filter(status="running").update(heartbeat_at=F("started_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("clones", "0003_worker_report"),
    ]

    operations = [
        migrations.AddField(
            model_name="clonejob",
            name="heartbeat_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When its worker last said it is alive (while running).",
                null=True,
            ),
        ),
        migrations.RunPython(beat_at_start, migrations.RunPython.noop),
    ]
