"""The profile page (/profile/): one's API tokens for the JSON API (made, listed, revoked), one's
SSH key for SSH URLs (made, replaced, deleted; its public half shown), the secret that signs
one's webhooks, and the bytes of archives one keeps against one's quota."""

from uuid import UUID

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from .. import retention, units
from ..models import ApiToken, Profile, SSHKey, new_webhook_secret
from ..pipeline import sshaccess
from ..safety import urlpolicy
from . import apitokens


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=ApiToken._meta.get_field("name").max_length,
        required=False,
        help_text="What the token is for, such as “CI” or “backup script”: it tells your "
        "tokens apart.",
    )


@login_required
@require_safe
@never_cache  # it shows the webhook secret
def profile(request: HttpRequest) -> HttpResponse:
    return _render(request, TokenForm())


@login_required
@require_POST
@never_cache  # the new token is shown once, and never from a cache
def new_token(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _render(request, form, status=400)
    # Shown in this answer, not after a redirect: nothing but this page ever holds the token.
    made, token = apitokens.make(request.user, form.cleaned_data["name"])
    return _render(request, TokenForm(), new_token=token, made=made)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: UUID) -> HttpResponse:
    apitokens.revoke(request.user, token_id)  # another's token: nothing happens, nothing is told
    return redirect("clones:profile")


@login_required
@require_POST
def new_secret(request: HttpRequest) -> HttpResponse:
    Profile.objects.update_or_create(
        user=request.user, defaults={"webhook_secret": new_webhook_secret()}
    )
    return redirect("clones:profile")


@login_required
@require_POST
def new_ssh_key(request: HttpRequest) -> HttpResponse:
    sshaccess.make_key(request.user)
    return redirect("clones:profile")


@login_required
@require_POST
def delete_ssh_key(request: HttpRequest) -> HttpResponse:
    SSHKey.objects.filter(owner=request.user).delete()
    return redirect("clones:profile")


def _render(request: HttpRequest, form: TokenForm, status: int = 200, **shown) -> HttpResponse:
    context = {
        "form": form,
        "tokens": ApiToken.objects.filter(owner=request.user),
        "profile": Profile.objects.get_or_create(user=request.user)[0],
        "ssh_key": SSHKey.objects.filter(owner=request.user).first(),
        "ssh_allowed": urlpolicy.ssh_allowed(),
        "storage": _storage(request.user),
        **shown,
    }
    return render(request, "clones/profile.html", context, status=status)


def _storage(user) -> dict:
    """What one's archives take, and of how much (in the words the quota's refusal uses)."""
    used, limit = retention.usage(user), retention.quota(user)
    return {
        "used": used,
        "used_words": units.human_size(used),
        "quota": limit,
        "quota_words": units.human_size(limit) if limit else "",
        "percent": round(100 * used / limit) if limit else None,  # a meter shows at most full
    }
