"""The project's URLs and a watch page, for tests of what links to a watch (clones.notify).

The watch pages are the web branch's part of issue 17; until it is merged, this stands in for
its route of the same name and path. The lead drops it at the merge."""

from django.http import HttpResponse
from django.urls import include, path

from clones import urls as clones_urls
from project import urls as project_urls

watch_page = path(
    "watches/<uuid:watch_id>/", lambda request, watch_id: HttpResponse(), name="watch"
)
urlpatterns = [
    pattern for pattern in project_urls.urlpatterns if getattr(pattern, "namespace", "") != "clones"
] + [path("", include(([*clones_urls.urlpatterns, watch_page], "clones")))]
