"""How HEAD is read without running git on the clone, and how git's commands reach git."""

import subprocess

import pytest

from clones.pipeline import engine
from clones.pipeline.cloning import MAX_CHECKOUT_WORKERS, checkout_workers, head_commit
from clones.pipeline.engine import output_lines
from clones.pipeline.gitwords import CloneFailed

from ..support.repos import git


@pytest.fixture
def cloned(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "--quiet", "--initial-branch=trunk", cwd=origin)
    git("commit", "--quiet", "--allow-empty", "-m", "one", cwd=origin)
    git("clone", "--quiet", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    return tmp_path / "clone", git("rev-parse", "HEAD", cwd=origin)


def test_head_commit_reads_a_packed_ref(cloned):
    checkout, commit = cloned
    git("pack-refs", "--all", cwd=checkout)
    assert head_commit(checkout / ".git") == commit


def test_head_commit_reads_a_detached_head(cloned):
    checkout, commit = cloned
    git("checkout", "--quiet", "--detach", cwd=checkout)
    assert head_commit(checkout / ".git") == commit


def test_an_empty_repository_has_nothing_to_archive(tmp_path):
    git("init", "--quiet", cwd=tmp_path)
    with pytest.raises(CloneFailed, match="The repository is empty"):
        head_commit(tmp_path / ".git")


def test_a_head_naming_a_missing_branch_says_so_not_empty(tmp_path):
    origin = tmp_path / "origin.git"
    git("init", "--quiet", "--bare", str(origin), cwd=tmp_path)
    work = tmp_path / "work"
    git("init", "--quiet", str(work), cwd=tmp_path)
    git("commit", "--quiet", "--allow-empty", "-m", "one", cwd=work)
    git("push", "--quiet", str(origin), "HEAD:refs/heads/release", cwd=work)
    git("symbolic-ref", "HEAD", "refs/heads/gone", cwd=origin)  # the default branch was deleted
    git("clone", "--quiet", f"file://{origin}", str(tmp_path / "clone"), cwd=tmp_path)

    with pytest.raises(CloneFailed) as failed:
        head_commit(tmp_path / "clone" / ".git")

    assert str(failed.value) == (
        "The repository's default branch, 'gone', does not exist; give one of its branches or tags."
    )


def test_an_odd_head_is_refused(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/../../etc/passwd\n")
    with pytest.raises(CloneFailed, match="unexpected HEAD"):
        head_commit(tmp_path / ".git")


def test_git_output_keeps_the_last_state_of_each_progress_meter():
    raw = b"Cloning into 'repo'...\nReceiving:  10% (1/10)\rReceiving:  50% (5/10)\r"
    assert output_lines(raw) == ["Cloning into 'repo'...", "Receiving:  50% (5/10)"]


def test_each_git_command_reaches_git_word_for_word_through_the_shell():
    hostile = "https://example.com/$(touch pwned);`id`'x\"&& echo no"
    commands = [["clone", "--", hostile, "/job/repo"], ["-C", "/job/repo", "read-tree", "HEAD"]]
    shell, dash_c, script = engine.git_script(commands)
    # git replaced by a function that prints each argument on a line of its own.
    fake_git = 'git() { printf "%s\\n" "$@"; echo ---; }; '

    printed = subprocess.run(
        [shell, dash_c, fake_git + script], capture_output=True, text=True, check=True
    ).stdout

    assert printed.split("---\n") == [*("\n".join(args) + "\n" for args in commands), ""]


def test_a_step_writes_gits_output_to_its_file_and_an_optional_ones_failure_stops_nothing(
    tmp_path,
):
    kept, failing = tmp_path / "kept out", tmp_path / "failing"
    commands = [
        engine.Step(["log", "$(id)"], stdout=str(kept)),
        engine.Step(["fail"], stdout=str(failing), optional=True),
        ["after"],
    ]
    shell, dash_c, script = engine.git_script(commands)
    # git replaced by a function that prints its arguments, and fails when told "fail".
    fake_git = 'git() { echo "$@"; [ "$1" != fail ]; }; '

    ran = subprocess.run([shell, dash_c, fake_git + script], capture_output=True, text=True)

    assert (ran.returncode, ran.stdout) == (0, "after\n")
    assert kept.read_text() == "log $(id)\n"
    assert failing.read_text() == "fail\n"


@pytest.mark.parametrize(
    "probe, runs",
    [
        ("quiet", False),  # found nothing: nothing to do
        ("loud", True),  # found something
        ("fail", True),  # could not tell: done, to be safe
    ],
)
def test_unless_quiet_runs_its_commands_unless_the_probe_succeeds_saying_nothing(
    probe, runs, tmp_path
):
    tips = tmp_path / "tips it reads"
    tips.write_text("abc\n")
    commands = [engine.UnlessQuiet([probe], stdin=str(tips), commands=[["then"], ["next"]])]
    shell, dash_c, script = engine.git_script([*commands, ["after"]])
    # git replaced by a function: "quiet" prints nothing, "loud" its input, "fail" fails.
    fake_git = (
        'git() { case "$1" in quiet) cat > /dev/null;; loud) cat;; fail) return 1;; '
        '*) echo "$@";; esac; }; '
    )

    ran = subprocess.run([shell, dash_c, fake_git + script], capture_output=True, text=True)

    assert ran.returncode == 0
    assert ran.stdout == ("then\nnext\nafter\n" if runs else "after\n")


@pytest.mark.parametrize(
    "probe, stops", [("silent", False), ("talks", True), ("fails", False), ("fails-talking", True)]
)
def test_a_fail_if_any_step_stops_the_script_when_its_probe_prints_anything(probe, stops):
    check = engine.FailIfAny([probe], says="refused:")
    shell, dash_c, script = engine.git_script([check, ["after"]])
    # git replaced by a function: what each probe prints, and whether it fails.
    fake_git = (
        'git() { case "$1" in silent) ;; talks) echo found;; fails) return 1;; '
        'fails-talking) echo found; return 1;; *) echo "$@";; esac; }; '
    )

    ran = subprocess.run([shell, dash_c, fake_git + script], capture_output=True, text=True)

    assert (ran.returncode, ran.stdout) == ((1, "") if stops else (0, "after\n"))
    assert ran.stderr == ("refused: found\n" if stops else "")


@pytest.mark.parametrize(
    "quota, cores, workers",
    [
        (0, 2, 2),  # no quota: the cores
        (0, 64, MAX_CHECKOUT_WORKERS),
        (1.5, 64, 2),  # a quota of 1.5 cores keeps two busy
        (0.5, 64, 1),
    ],
)
def test_git_checks_out_on_as_many_workers_as_the_container_has_cores(
    quota, cores, workers, settings, monkeypatch
):
    settings.CLONES_CONTAINER_CPUS = quota
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert checkout_workers() == workers
