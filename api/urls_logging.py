"""API routes of the logging area."""

from django.urls import path

from .views import logging as v

urlpatterns: list = [
    path("runs/<int:run_id>/metrics/", v.MetricsView.as_view(), name="run-metrics"),
    path("runs/<int:run_id>/text/", v.TextView.as_view(), name="run-text"),
    path("runs/<int:run_id>/histograms/", v.HistogramsView.as_view(), name="run-histograms"),
    path("runs/<int:run_id>/pr-curves/", v.PRCurvesView.as_view(), name="run-pr-curves"),
    path("runs/<int:run_id>/images/", v.RunImagesView.as_view(), name="run-images"),
    path("images/<int:image_id>/content", v.ImageContentView.as_view(), name="image-content"),
    path("runs/<int:run_id>/artifacts/", v.RunArtifactsView.as_view(), name="run-artifacts"),
    path("artifacts/<int:artifact_id>/", v.ArtifactDetailView.as_view(), name="artifact-detail"),
    path(
        "artifacts/<int:artifact_id>/content",
        v.ArtifactContentView.as_view(),
        name="artifact-content",
    ),
    path(
        "artifacts/<int:artifact_id>/complete/",
        v.ArtifactCompleteView.as_view(),
        name="artifact-complete",
    ),
    path(
        "artifacts/<int:artifact_id>/parts/",
        v.ArtifactPartsView.as_view(),
        name="artifact-parts",
    ),
    path(
        "artifacts/<int:artifact_id>/download",
        v.ArtifactDownloadView.as_view(),
        name="artifact-download",
    ),
]
