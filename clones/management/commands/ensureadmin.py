"""`manage.py ensureadmin`: the first admin, so that a first start needs no step before it.

Run after `migrate` (compose's migrate service and ./run do). With no superuser yet, it makes
one: CLONESHELF_ADMIN_USER (default "admin") with CLONESHELF_ADMIN_PASSWORD, or, when that is
unset, with a random password printed this once. Once a superuser exists it does nothing, so a
password changed since is never reset.
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first admin (a superuser) if there is none; see CLONESHELF_ADMIN_USER."

    def handle(self, *args, **options):
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return
        username = os.environ.get("CLONESHELF_ADMIN_USER") or "admin"
        password = os.environ.get("CLONESHELF_ADMIN_PASSWORD", "")
        users.create_superuser(username, email="", password=password or _one_time(self, username))
        if password:
            self.stdout.write(f"Created the admin {username!r}, password from the environment.")


def _one_time(command: BaseCommand, username: str) -> str:
    password = secrets.token_urlsafe(12)
    command.stdout.write(
        f"Created the admin {username!r} with the password {password} — shown this once: "
        "log in at /admin/ and change it."
    )
    return password
