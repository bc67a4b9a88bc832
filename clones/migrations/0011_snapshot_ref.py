from django.db import migrations, models


def forget_keys(apps, schema_editor):
    """A snapshot made so far was keyed without the ref its bytes may name, and which ref it was
    cloned through was not recorded: none is found by its key any more (a new request builds its
    own), and each keeps serving its own jobs until they expire."""
    apps.get_model("clones", "Snapshot").objects.update(key=None)


class Migration(migrations.Migration):
    dependencies = [
        ("clones", "0010_refused_submissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="snapshot",
            name="ref",
            field=models.TextField(
                blank=True,
                help_text="The part of the ref its bytes depend on "
                "(clones.cloning.ref_in_archive): the full ref name, 'refs/tags/*' for any tag, "
                "or blank for none.",
            ),
        ),
        migrations.RunPython(forget_keys, migrations.RunPython.noop),
    ]
