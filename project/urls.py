from django.contrib import admin
from django.urls import include, path

from clones import api, health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls()),
    path("", include("clones.urls")),
]
