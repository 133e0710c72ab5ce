"""Web routes. Project pages are mounted twice: under /<ws>/<project>/ for members and under
/s/<token>/ for share links, so every sub-page of a shared view stays under its token."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import pages, runs, settings_views, tokens, views

app_name = "web"

# Pages and data endpoints that exist both for members and for share links.
scoped_patterns = [
    path("", pages.project_page, name="project"),
    path("runs/<int:run_id>/", runs.run_page, name="run"),
    path("compare", runs.compare_page, name="compare"),
    path("columns", pages.columns_fragment, name="columns"),
    path("data/series", runs.series_data, name="series-data"),
    path("data/histograms", runs.histogram_data, name="histogram-data"),
    path("images/<int:image_id>", runs.image_content, name="image"),
    path("artifacts/<int:artifact_id>/download", runs.artifact_download, name="artifact"),
]

urlpatterns = [
    path("", pages.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("tokens/", tokens.tokens_page, name="tokens"),
    path("s/<str:token>/", include((scoped_patterns, "share"))),
    path("<slug:ws>/", pages.workspace_page, name="workspace"),
    path("<slug:ws>/<slug:project>/settings", settings_views.settings_page, name="settings"),
    path("<slug:ws>/<slug:project>/", include(scoped_patterns)),
]
