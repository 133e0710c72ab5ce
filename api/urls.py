"""API v1 routes. Area modules (ingest, logging, query) append their own urlpatterns."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from .views import core

app_name = "api"

urlpatterns = [
    # The schema is public and ignores credentials, so a stale token never hides it.
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], throttle_classes=[]),
        name="schema",
    ),
    path("me/", core.MeView.as_view(), name="me"),
    path("workspaces/", core.WorkspaceListView.as_view(), name="workspace-list"),
    path("workspaces/<slug:ws>/", core.WorkspaceDetailView.as_view(), name="workspace-detail"),
    path("workspaces/<slug:ws>/members/", core.MemberListView.as_view(), name="member-list"),
    path(
        "workspaces/<slug:ws>/members/<int:user_id>/",
        core.MemberDetailView.as_view(),
        name="member-detail",
    ),
    path("workspaces/<slug:ws>/projects/", core.ProjectListView.as_view(), name="project-list"),
    path(
        "projects/<slug:ws>/<slug:project>/",
        core.ProjectDetailView.as_view(),
        name="project-detail",
    ),
    path(
        "projects/<slug:ws>/<slug:project>/members/",
        core.ProjectMemberListView.as_view(),
        name="project-member-list",
    ),
    path(
        "projects/<slug:ws>/<slug:project>/members/<int:user_id>/",
        core.ProjectMemberDetailView.as_view(),
        name="project-member-detail",
    ),
    path("projects/<slug:ws>/<slug:project>/runs/", core.RunListView.as_view(), name="run-list"),
    path(
        "projects/<slug:ws>/<slug:project>/share-links/",
        core.ShareLinkListView.as_view(),
        name="share-link-list",
    ),
    path(
        "share-links/<int:link_id>/", core.ShareLinkDetailView.as_view(), name="share-link-detail"
    ),
    path("runs/<int:run_id>/", core.RunDetailView.as_view(), name="run-detail"),
    path("runs/<int:run_id>/params/", core.RunParamsView.as_view(), name="run-params"),
    path("tokens/", core.TokenListView.as_view(), name="token-list"),
    path("tokens/<int:token_id>/", core.TokenDetailView.as_view(), name="token-detail"),
    # Areas: each module owns its routes (issue 4 ingest, 5 live logging, 6 reads).
    path("", include("api.urls_ingest")),
    path("", include("api.urls_logging")),
    path("", include("api.urls_query")),
]
