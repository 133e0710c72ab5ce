"""API routes of the ingest area."""

from django.urls import path

from .views import ingest as v

urlpatterns: list = [
    path(
        "projects/<slug:ws>/<slug:project>/uploads/",
        v.UploadCreateView.as_view(),
        name="upload-create",
    ),
    path(
        "projects/<slug:ws>/<slug:project>/uploads/archive",
        v.ArchiveUploadView.as_view(),
        name="upload-archive",
    ),
    path(
        "projects/<slug:ws>/<slug:project>/jobs/",
        v.ProjectJobListView.as_view(),
        name="project-job-list",
    ),
    path(
        "uploads/<int:job_id>/files/content",
        v.UploadContentView.as_view(),
        name="upload-content",
    ),
    path("uploads/<int:job_id>/finish/", v.UploadFinishView.as_view(), name="upload-finish"),
    path("jobs/<int:job_id>/", v.JobDetailView.as_view(), name="job-detail"),
]
