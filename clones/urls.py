from django.urls import path, re_path

from .web import dashboard, profile, views, watchviews

app_name = "clones"

urlpatterns = [
    path("", views.new_clone, name="new"),
    path("clones/", views.history, name="history"),
    path("clones/<uuid:job_id>/", views.detail, name="detail"),
    path("clones/<uuid:job_id>/panel", views.panel, name="panel"),
    path("clones/<uuid:job_id>/download", views.download, name="download"),
    path("clones/<uuid:job_id>/download.sha256", views.checksum, name="checksum"),
    path("clones/<uuid:job_id>/provenance.json", views.provenance, name="provenance"),
    path(".well-known/cloneshelf/keys", views.signing_keys, name="signing-keys"),
    path("keys/", views.signing_keys_page, name="keys"),
    re_path(r"^a/(?P<sha256>[0-9a-fA-F]{64})$", views.by_digest, name="by-digest"),
    path("clones/<uuid:job_id>/again", views.clone_again, name="again"),
    path("clones/<uuid:job_id>/cancel", views.cancel, name="cancel"),
    path("clones/<uuid:job_id>/pin", watchviews.pin, name="pin"),
    path("clones/<uuid:job_id>/unpin", watchviews.unpin, name="unpin"),
    path("watches/", watchviews.watch_list, name="watches"),
    path("watches/new", watchviews.new_watch, name="watch-new"),
    path("watches/<uuid:watch_id>/", watchviews.watch_page, name="watch"),
    path("watches/<uuid:watch_id>/check", watchviews.check_now, name="watch-check"),
    path("watches/<uuid:watch_id>/pause", watchviews.set_active, {"active": False}, "watch-pause"),
    path("watches/<uuid:watch_id>/resume", watchviews.set_active, {"active": True}, "watch-resume"),
    path("watches/<uuid:watch_id>/delete", watchviews.delete, name="watch-delete"),
    path("profile/", profile.profile, name="profile"),
    path("profile/tokens", profile.new_token, name="token-new"),
    path("profile/tokens/<uuid:token_id>/revoke", profile.revoke_token, name="token-revoke"),
    path("profile/webhook-secret", profile.new_secret, name="webhook-secret"),
    path("profile/ssh-key", profile.new_ssh_key, name="ssh-key-new"),
    path("profile/ssh-key/delete", profile.delete_ssh_key, name="ssh-key-delete"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
]
