"""API tokens for the JSON API (clones.web.api): made, found, revoked.

A token is shown once, when it is made; only its sha256 is kept, with its first letters to tell
it apart. A presented token is looked up by its digest: the database compares hashes, which say
nothing about how close a guess came, so the lookup needs no constant-time comparison of its own.
"""

import hashlib
import secrets
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from ..models import ApiToken

TOKEN_PREFIX = "cs_"  # says what a token found in a log or a repository is for
SHOWN_LETTERS = 10  # "cs_" and 7 more: enough to tell one's tokens apart, far too few to guess
# last_used_at is a hint for people, not an audit log: refreshing it at most this often spares
# the database a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make(owner, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `owner`: its row, and the token itself, which is never shown again."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        owner=owner, name=name, digest=digest(token), prefix=token[:SHOWN_LETTERS]
    )
    return row, token


def user_for(token: str):
    """The active user who owns this unrevoked token, or None."""
    found = (
        ApiToken.objects.select_related("owner")
        .filter(digest=digest(token), revoked_at__isnull=True, owner__is_active=True)
        .first()
    )
    if found is None:
        return None
    _note_use(found)
    return found.owner


def _note_use(token: ApiToken) -> None:
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is None or token.last_used_at < stale:
        # Conditional, so that requests arriving together write it once.
        ApiToken.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=token.pk
        ).update(last_used_at=now)


def revoke(owner, token_id) -> bool:
    """Revoke one of `owner`'s tokens; False if it is not theirs or was revoked already."""
    return bool(revoke_all(ApiToken.objects.filter(owner=owner, pk=token_id)))


def revoke_by_prefix(owner, prefix: str) -> int:
    """Revoke `owner`'s token shown as `prefix` (its first letters, whole: "cs_" alone must not
    revoke them all); how many were revoked."""
    return revoke_all(ApiToken.objects.filter(owner=owner, prefix=prefix))


def revoke_all(tokens) -> int:
    """Revoke these tokens (a queryset), but for those revoked already; how many were."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
