"""Credentials at rest (clones.safety.vault): the key file, written once and whole, and its
rotation."""

import threading

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from clones import watches
from clones.models import KnownHost, SSHKey, Watch
from clones.pipeline import gitwords, sshaccess
from clones.safety import vault
from clones.safety.urlpolicy import PinnedURL


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.CLONES_DATA_DIR = tmp_path
    return tmp_path


def key_lines(data_dir) -> list[str]:
    return (data_dir / vault.KEY_FILE).read_text().split()


def test_processes_starting_at_once_make_one_key_and_never_read_it_half_written(data_dir):
    start, sealed, errors = threading.Barrier(16), [], []

    def first_use() -> None:
        start.wait()
        try:
            sealed.append(vault.seal("glpat-secret"))
        except Exception as error:  # an empty or half-written key file
            errors.append(error)

    threads = [threading.Thread(target=first_use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(key_lines(data_dir)) == 1
    assert {vault.open_sealed(secret) for secret in sealed} == {"glpat-secret"}
    assert [path.name for path in data_dir.iterdir()] == [vault.KEY_FILE]  # no temporary left
    assert (data_dir / vault.KEY_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.django_db
def test_rotation_seals_every_credential_again_under_a_new_key_on_top(data_dir, owner):
    with_one = watches.create(owner, "https://example.com/a.git", credential="token-a")
    without = watches.create(owner, "https://example.com/b.git")
    lost = watches.create(owner, "https://example.com/c.git")
    stranger = Fernet(Fernet.generate_key()).encrypt(b"token-c").decode()
    Watch.objects.filter(pk=lost.pk).update(credential=stranger)  # its key is not ours
    [old_key] = key_lines(data_dir)

    assert vault.rotate() == 1

    new_key, kept = key_lines(data_dir)
    assert kept == old_key != new_key
    resealed = Watch.objects.get(pk=with_one.pk).credential
    assert resealed != with_one.credential
    assert Fernet(new_key).decrypt(resealed.encode()) == b"token-a"
    assert vault.open_sealed(with_one.credential) == "token-a"  # the old key still opens
    assert Watch.objects.get(pk=without.pk).credential == ""
    assert Watch.objects.get(pk=lost.pk).credential == stranger  # left, still unreadable

    call_command("rotatekeys", "--forget-old")

    [newest] = key_lines(data_dir)
    assert newest not in (old_key, new_key)
    assert vault.open_sealed(Watch.objects.get(pk=with_one.pk).credential) == "token-a"
    with pytest.raises(vault.Unreadable):
        vault.open_sealed(with_one.credential)  # sealed under a key forgotten


def test_rotation_seals_ssh_keys_again_too(data_dir, owner, other_user):
    key = sshaccess.make_key(owner)
    private = vault.open_sealed(key.sealed_private)
    lost = sshaccess.make_key(other_user)
    stranger = Fernet(Fernet.generate_key()).encrypt(b"not ours").decode()
    SSHKey.objects.filter(pk=lost.pk).update(sealed_private=stranger)

    call_command("rotatekeys", "--forget-old")

    assert vault.open_sealed(SSHKey.objects.get(pk=key.pk).sealed_private) == private
    with pytest.raises(vault.Unreadable):
        vault.open_sealed(key.sealed_private)  # sealed under a key forgotten
    # A key no vault key opens fails its clones, telling its owner what to do.
    pinned = PinnedURL("ssh://git@192.0.2.1/r.git", None, "ssh", "git.example.test", 22)
    KnownHost.objects.create(pattern="git.example.test", key_type="ssh-ed25519", key_base64="x")
    with pytest.raises(gitwords.CloneFailed, match="Your SSH key cannot be decrypted any more"):
        sshaccess.for_owner(other_user.pk, pinned)
