from django.urls import path

from .web import dashboard, profile, views

app_name = "clones"

urlpatterns = [
    path("", views.new_clone, name="new"),
    path("clones/", views.history, name="history"),
    path("clones/<uuid:job_id>/", views.detail, name="detail"),
    path("clones/<uuid:job_id>/panel", views.panel, name="panel"),
    path("clones/<uuid:job_id>/download", views.download, name="download"),
    path("clones/<uuid:job_id>/download.sha256", views.checksum, name="checksum"),
    path("clones/<uuid:job_id>/again", views.clone_again, name="again"),
    path("clones/<uuid:job_id>/cancel", views.cancel, name="cancel"),
    path("profile/", profile.profile, name="profile"),
    path("profile/tokens", profile.new_token, name="token-new"),
    path("profile/tokens/<uuid:token_id>/revoke", profile.revoke_token, name="token-revoke"),
    path("profile/webhook-secret", profile.new_secret, name="webhook-secret"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
]
