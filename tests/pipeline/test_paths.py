"""The docker-in-docker lesson: the engine resolves bind mounts on its own filesystem.

Here the worker runs in a mount namespace of its own where the data volume appears at an alias
path that the engine cannot see (in the engine's namespace that directory stays empty). The
clone must still land where the worker reads it, which only works if every path handed to the
engine is translated to CLONES_ENGINE_DATA_DIR.
"""

from pathlib import Path, PurePosixPath

from django.conf import settings
from django.test import override_settings

from clones.models import Status
from clones.pipeline import paths

from ..support.helpers import assert_is_clean_checkout, download, submit, wait_for_job


def alias_namespace(real: Path, alias: Path) -> list[str]:
    """A command prefix: run in a private mount namespace where `alias` shows `real`."""
    real.mkdir(parents=True, exist_ok=True)
    alias.mkdir()
    mount_then_run = f'mount --bind "{real}" "{alias}" && exec "$@"'
    return ["unshare", "--mount", "--propagation=private", "sh", "-c", mount_then_run, "worker"]


def test_engine_path_translates_from_the_app_view(tmp_path):
    with override_settings(
        CLONES_DATA_DIR=Path("/data"), CLONES_ENGINE_DATA_DIR=Path("/var/lib/cloneshelf")
    ):
        translated = paths.engine_path(paths.job_dir("1234"))
    assert translated == PurePosixPath("/var/lib/cloneshelf/jobs/1234")


def test_clones_land_where_the_app_reads_them_when_the_engine_sees_another_path(
    owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    engine_view = settings.CLONES_DATA_DIR  # the real directory, as the engine sees it
    app_view = tmp_path / "alias"  # empty here; the data volume only inside the worker
    repo = new_repo()
    start_worker(
        env={"CLONES_DATA_DIR": str(app_view), "CLONES_ENGINE_DATA_DIR": str(engine_view)},
        prefix=alias_namespace(engine_view, app_view),
    )

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.DONE, job.error
    assert_is_clean_checkout(download(owner_client, job, tmp_path), repo.head)
    assert list(app_view.iterdir()) == []  # the engine never wrote to the alias path


def test_without_translation_the_engine_cannot_find_the_job_directory(
    owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    """The control: same set-up, but the engine is told the app's path."""
    engine_view = settings.CLONES_DATA_DIR
    app_view = tmp_path / "alias"
    repo = new_repo()
    start_worker(
        env={"CLONES_DATA_DIR": str(app_view), "CLONES_ENGINE_DATA_DIR": str(app_view)},
        prefix=alias_namespace(engine_view, app_view),
    )

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED
    assert "bind source path does not exist" in job.error
