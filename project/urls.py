from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from clones.ops import health
from clones.web import api

# Of django.contrib.auth's pages, logging in and out, and changing one's password (which asks
# for the current one). No password reset by email: accounts come only from an admin, who sets
# a new password for whoever forgot theirs, and no mail server need be configured.
accounts = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include(accounts)),
    path("api/", api.urls()),
    path("", include("clones.urls")),
]
