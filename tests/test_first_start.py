"""A first start needs no step before it: the first admin is made for you."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.database


def ensure_admin(capsys) -> str:
    call_command("ensureadmin")
    return capsys.readouterr().out


def test_the_first_admin_gets_a_one_time_password_printed_once(db, capsys, monkeypatch):
    monkeypatch.delenv("CLONESHELF_ADMIN_USER", raising=False)
    monkeypatch.delenv("CLONESHELF_ADMIN_PASSWORD", raising=False)

    said = ensure_admin(capsys)

    admin = get_user_model().objects.get(is_superuser=True)
    assert admin.username == "admin" and admin.is_staff
    password = said.split("with the password ")[1].split()[0]
    assert admin.check_password(password)
    assert ensure_admin(capsys) == ""  # never again, and never reset
    assert get_user_model().objects.count() == 1


def test_the_first_admin_from_the_environment(db, capsys, monkeypatch):
    monkeypatch.setenv("CLONESHELF_ADMIN_USER", "root-of-it")
    monkeypatch.setenv("CLONESHELF_ADMIN_PASSWORD", "correct horse battery staple")

    said = ensure_admin(capsys)

    admin = get_user_model().objects.get(is_superuser=True)
    assert admin.username == "root-of-it"
    assert admin.check_password("correct horse battery staple")
    assert "correct horse" not in said  # a password given is never echoed


def test_an_existing_superuser_is_left_alone(db, capsys, django_user_model):
    django_user_model.objects.create_superuser("boss", password="x")
    assert ensure_admin(capsys) == ""
    assert django_user_model.objects.count() == 1
