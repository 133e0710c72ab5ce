"""Logdir uploads (resumable, chunked), archive uploads and ingest job status.

Uploading needs the contributor role on the project; reading a job needs viewer. Parsing
happens in Celery (`tracker.tasks_ingest`); these views only move bytes and rows.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from tracker import access, tasks_ingest
from tracker.access import CONTRIBUTOR
from tracker.selectors import jobs as job_selectors
from tracker.services import uploads
from tracker.services.errors import ServiceError, TooLarge

from ..serializers import ingest as s
from .base import TrackerView


def _job_response(job, status: int = 200) -> Response:  # type: ignore[no-untyped-def]
    return Response(s.JobOut(job_selectors.job_view(job)).data, status=status)


class UploadCreateView(TrackerView):
    @extend_schema(request=s.UploadIn, responses={201: s.JobOut})
    def post(self, request, ws, project):  # type: ignore[no-untyped-def]
        p = self.principal
        proj = access.get_project(p, ws, project, CONTRIBUTOR)
        data = self.validated(s.UploadIn)
        job = uploads.create_upload(
            project=proj,
            user=p.acting_user,
            files=[dict(f) for f in data["files"]],
            runs_mode=data["runs_mode"],
            root_name=data.get("root_name", ""),
        )
        return _job_response(job, 201)


class UploadContentView(TrackerView):
    parser_classes: list = []  # the body is raw bytes, read as they are

    @extend_schema(
        request={"application/octet-stream": bytes},
        parameters=[
            OpenApiParameter("path", str, required=True, description="relative file path"),
            OpenApiParameter("offset", int, required=True),
        ],
        responses=s.BytesReceivedOut,
    )
    def put(self, request, job_id):  # type: ignore[no-untyped-def]
        job = access.get_job(self.principal, job_id, CONTRIBUTOR)
        limit = min(uploads.max_chunk_bytes(), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise TooLarge(f"Chunks are at most {limit} bytes.", field="body")
        path = request.query_params.get("path")
        if path is None:
            raise ServiceError("The file's relative path is required.", field="path")
        received = uploads.append_chunk(
            job=job, path=path, offset=request.query_params.get("offset"), data=request.body
        )
        return Response({"bytes_received": received})


class UploadFinishView(TrackerView):
    @extend_schema(request=None, responses={202: s.JobOut})
    def post(self, request, job_id):  # type: ignore[no-untyped-def]
        job = access.get_job(self.principal, job_id, CONTRIBUTOR)
        job = uploads.finish_upload(job, tasks_ingest.process_job)
        return _job_response(job, 202)


class ArchiveUploadView(TrackerView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.ArchiveIn},
        responses={202: s.JobOut},
    )
    def post(self, request, ws, project):  # type: ignore[no-untyped-def]
        p = self.principal
        proj = access.get_project(p, ws, project, CONTRIBUTOR)
        data = self.validated(s.ArchiveIn)
        upload = data["file"]
        job = uploads.create_archive_job(
            project=proj,
            user=p.acting_user,
            upload=upload,
            runs_mode=data["runs_mode"],
            task=tasks_ingest.process_job,
        )
        return _job_response(job, 202)


class JobDetailView(TrackerView):
    @extend_schema(responses=s.JobOut)
    def get(self, request, job_id):  # type: ignore[no-untyped-def]
        return _job_response(access.get_job(self.principal, job_id))


class ProjectJobListView(TrackerView):
    @extend_schema(responses=s.JobListOut(many=True))
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        return self.page(job_selectors.project_jobs(proj), s.JobListOut)
