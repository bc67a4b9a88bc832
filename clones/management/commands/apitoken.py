from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from clones.web import apitokens


class Command(BaseCommand):
    help = (
        "Make an API token for a user and print it (only the token, on stdout: it is shown "
        "once); or revoke one with --revoke PREFIX."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", help="the user the token acts as")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument(
            "--revoke",
            metavar="PREFIX",
            help="revoke the user's token whose first letters (as listed) are PREFIX instead",
        )

    def handle(self, *args, username, name, revoke, **_):
        user = self._user(username)
        if revoke:
            if not apitokens.revoke_by_prefix(user, revoke):
                raise CommandError(f"{username} has no unrevoked token {revoke}.")
            self.stderr.write(f"Revoked {username}'s token {revoke}.")
            return
        _made, token = apitokens.make(user, name)
        self.stdout.write(token)

    def _user(self, username: str):
        users = get_user_model()
        try:
            return users.objects.get(**{users.USERNAME_FIELD: username})
        except users.DoesNotExist:
            raise CommandError(f"There is no user {username!r}.") from None
