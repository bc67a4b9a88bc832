"""What people see of SSH remotes: their key on the profile page, the clone form's refusals, and
the known hosts in the admin (added as ssh-keyscan prints them, confirmed, and what view-only
staff may not do)."""

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from clones.models import CloneJob, KnownHost, SSHKey, Status
from clones.pipeline import sshaccess
from clones.safety import sshkeys, vault

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

HOST_LINE = "git.example.test " + sshkeys.make_key_pair("host").public_line.rsplit(" ", 1)[0]
KNOWN_HOSTS = reverse("admin:clones_knownhost_changelist")
ADD_KNOWN_HOST = reverse("admin:clones_knownhost_add")


def test_the_profile_page_makes_a_key_and_shows_only_its_public_half(
    owner_client, owner, ssh_allowed
):
    assert "Make an SSH key" in owner_client.get(reverse("clones:profile")).content.decode()

    owner_client.post(reverse("clones:ssh-key-new"))

    key = SSHKey.objects.get(owner=owner)
    page = owner_client.get(reverse("clones:profile")).content.decode()
    assert key.public_line in page and key.fingerprint in page
    private = vault.open_sealed(key.sealed_private)
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "PRIVATE KEY" not in page and key.sealed_private not in page
    assert private not in key.sealed_private  # encrypted at rest


def test_a_new_key_replaces_the_old_and_deleting_leaves_none(owner_client, owner, ssh_allowed):
    owner_client.post(reverse("clones:ssh-key-new"))
    first = SSHKey.objects.get(owner=owner)
    owner_client.post(reverse("clones:ssh-key-new"))
    second = SSHKey.objects.get(owner=owner)
    assert second.public_line != first.public_line
    assert second.sealed_private != first.sealed_private

    owner_client.post(reverse("clones:ssh-key-delete"))
    assert not SSHKey.objects.filter(owner=owner).exists()


def test_one_persons_key_is_not_anothers(client, owner, other_user, ssh_allowed):
    sshaccess.make_key(owner)
    client.force_login(other_user)
    page = client.get(reverse("clones:profile")).content.decode()
    assert SSHKey.objects.get(owner=owner).public_line not in page
    client.post(reverse("clones:ssh-key-delete"))  # deletes only the other user's (none)
    assert SSHKey.objects.filter(owner=owner).exists()


def test_the_key_section_is_hidden_where_ssh_is_not_accepted(owner_client):
    assert "SSH key" not in owner_client.get(reverse("clones:profile")).content.decode()


@pytest.mark.parametrize(
    "url", ["ssh://git@git.example.test/team/app.git", "git@git.example.test:team/app.git"]
)
def test_an_ssh_url_without_a_key_is_refused_at_the_form(owner_client, ssh_allowed, url):
    response = owner_client.post(reverse("clones:new"), {"url": url})
    assert response.status_code == 200  # the form again, saying why
    assert sshaccess.NO_KEY in response.content.decode()
    assert not CloneJob.objects.exists()


def test_an_ssh_url_with_a_key_is_accepted_and_its_lfs_and_tokens_are_not(
    owner_client, owner, ssh_allowed
):
    sshaccess.make_key(owner)
    url = "git@git.example.test:team/app.git"
    refused = owner_client.post(reverse("clones:new"), {"url": url, "lfs": "on", "token": "t0k"})
    page = refused.content.decode()
    assert "Git LFS files are fetched for https:// URLs only" in page
    assert "An access token can only be sent over https:// URLs." in page

    accepted = owner_client.post(reverse("clones:new"), {"url": url})
    assert accepted.status_code == 302
    assert CloneJob.objects.get().url == url


def test_staff_add_a_host_key_as_ssh_keyscan_prints_it(client, staff):
    client.force_login(staff)
    response = client.post(ADD_KNOWN_HOST, {"line": HOST_LINE})
    assert response.status_code == 302, response.content.decode()
    known = KnownHost.objects.get()
    seen = sshkeys.parse_known_host(HOST_LINE)
    assert (known.pattern, known.key_type, known.fingerprint) == (
        "git.example.test",
        "ssh-ed25519",
        seen.fingerprint,
    )
    assert known.added_by == staff and not known.trusted_on_first_use

    again = client.post(ADD_KNOWN_HOST, {"line": HOST_LINE})
    assert "has a ssh-ed25519 key here already" in again.content.decode()
    hashed = client.post(ADD_KNOWN_HOST, {"line": "|1|abc=|def= " + HOST_LINE.split(" ", 1)[1]})
    assert hashed.status_code == 200 and KnownHost.objects.count() == 1


def test_the_known_hosts_page_says_whether_first_use_is_trusted(client, staff, settings):
    client.force_login(staff)
    settings.CLONES_SSH_TRUST_ON_FIRST_USE = True
    assert "Trust on first use is on" in client.get(KNOWN_HOSTS, follow=True).content.decode()
    settings.CLONES_SSH_TRUST_ON_FIRST_USE = False
    assert "Trust on first use is off" in client.get(KNOWN_HOSTS, follow=True).content.decode()


def test_confirming_a_key_trusted_on_first_use_needs_the_change_permission(
    client, django_user_model
):
    seen = sshkeys.parse_known_host(HOST_LINE)
    known = KnownHost.objects.create(
        **sshaccess.known_host_fields(seen),
        trusted_on_first_use=True,
    )
    viewer = django_user_model.objects.create_user("viewer", password="pw-v-123", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    action = {"action": "confirm", "_selected_action": [known.pk]}
    client.post(KNOWN_HOSTS, action)
    assert client.post(ADD_KNOWN_HOST, {"line": HOST_LINE}).status_code == 403
    known.refresh_from_db()
    assert known.trusted_on_first_use

    viewer.user_permissions.add(Permission.objects.get(codename="change_knownhost"))
    client.post(KNOWN_HOSTS, action)
    known.refresh_from_db()
    assert not known.trusted_on_first_use


def test_clone_again_and_the_cli_also_refuse_an_ssh_url_without_a_key(
    owner_client, owner, ssh_allowed
):
    url = "git@git.example.test:team/app.git"
    earlier = CloneJob.objects.create(owner=owner, url=url, status=Status.FAILED)

    again = owner_client.post(reverse("clones:again", args=[earlier.id]))

    assert again.status_code == 400 and sshaccess.NO_KEY in again.content.decode()
    with pytest.raises(CommandError, match="make one on your profile page"):
        call_command("clone", url, user=owner.username)
    assert CloneJob.objects.count() == 1
