"""Live logging: metric batches, text, histograms, PR curves, images and artifacts.

Writes need the contributor role on the run's project (viewer → 403, another tenant → 404)
and carry an `Idempotency-Key`: the first response is stored with the data in one
transaction and replayed for a retry, so a batch whose response was lost is stored once.
Finished runs still accept writes (late flushes from the client's journal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.response import Response

from tracker import access
from tracker.access import CONTRIBUTOR
from tracker.models import Run
from tracker.selectors import media as media_selectors
from tracker.services import artifacts as artifact_services
from tracker.services import idempotency
from tracker.services import logging as log_services
from tracker.services import media as media_services
from tracker.services.errors import TooLarge
from tracker.services.metric_columns import MEDIA_TYPE
from tracker.storage import get_blob_store

from ..parsers import JSONParser, read_body
from ..serializers import logging as s
from .base import TrackerView

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="8-100 characters; a retry with the same key replays the first response",
)


class BatchJSONParser(JSONParser):
    """orjson for the batch endpoints: a 50,000-point body parses about twice as fast as with
    json, and orjson's own nesting limit (1,024, checked in C without recursion) stands in for
    the character-by-character depth scan, which costs ~100 ms on a large body with many
    series. Bare NaN/Infinity and numbers that overflow a double are refused, as in JSON."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:  # type: ignore[no-untyped-def]
        raw = read_body(stream, parser_context)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(
                f'JSON parse error: {exc} (non-finite values are the strings "NaN", '
                '"Infinity", "-Infinity")'
            ) from None


class ColumnsParser(BaseParser):
    """A metrics batch as binary columns (`tracker.services.metric_columns`): the body's bytes,
    gunzipped, go to the service, which validates them."""

    media_type = MEDIA_TYPE

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:  # type: ignore[no-untyped-def]
        return read_body(stream, parser_context)


class _BatchView(TrackerView):
    """POST of a JSON batch to a run, once per Idempotency-Key."""

    area = ""
    parser_classes = [BatchJSONParser]

    def store(self, run: Run, body: Any) -> int:
        raise NotImplementedError

    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)
        return _once(
            request, run, self.area, lambda: (200, {"stored": self.store(run, request.data)})
        )


def _once(request, run: Run, area: str, work: Callable[[], tuple[int, Any]]) -> Response:  # type: ignore[no-untyped-def]
    status, body, replayed = idempotency.run_once(
        f"run:{run.pk}:{area}", request.headers.get("Idempotency-Key"), work
    )
    response = Response(body, status=status)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class MetricsView(_BatchView):
    area = "metrics"
    parser_classes = [BatchJSONParser, ColumnsParser]

    def store(self, run: Run, body: Any) -> int:
        return log_services.log_metrics(run, body)

    @extend_schema(
        request={"application/json": s.MetricsIn, MEDIA_TYPE: OpenApiTypes.BINARY},
        responses=s.StoredOut,
        parameters=[IDEMPOTENCY_HEADER],
    )
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().post(request, run_id)


class TextView(_BatchView):
    area = "text"

    def store(self, run: Run, body: Any) -> int:
        return log_services.log_text(run, body)

    @extend_schema(request=s.TextIn, responses=s.StoredOut, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().post(request, run_id)


class HistogramsView(_BatchView):
    area = "histograms"

    def store(self, run: Run, body: Any) -> int:
        return log_services.log_histograms(run, body)

    @extend_schema(request=s.HistogramsIn, responses=s.StoredOut, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().post(request, run_id)


class PRCurvesView(_BatchView):
    area = "pr-curves"

    def store(self, run: Run, body: Any) -> int:
        return log_services.log_pr_curves(run, body)

    @extend_schema(request=s.PRCurvesIn, responses=s.StoredOut, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().post(request, run_id)


# --- images ------------------------------------------------------------------------------------
class RunImagesView(TrackerView):
    parser_classes = [MultiPartParser, FormParser]
    ordering = ("step", "id")

    def paginate_queryset(self, queryset):  # type: ignore[no-untyped-def]
        self.paginator.ordering = self.ordering
        return super().paginate_queryset(queryset)

    @extend_schema(
        parameters=[OpenApiParameter("key", str, required=False)], responses=s.ImageOut(many=True)
    )
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        qs = media_selectors.images_for_run(run, request.query_params.get("key"))
        return self.page(qs, s.ImageOut)

    @extend_schema(
        request={"multipart/form-data": s.ImagesIn},
        responses={201: OpenApiResponse(description='{"images": [ImageCreated...]}')},
        parameters=[IDEMPOTENCY_HEADER],
    )
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)

        def work() -> tuple[int, Any]:
            rows = media_services.log_images(run, request.data.get("meta"), request.FILES)
            return 201, {"images": s.ImageCreatedOut(rows, many=True).data}

        return _once(request, run, "images", work)


class ImageContentView(TrackerView):
    @extend_schema(
        parameters=[OpenApiParameter("thumb", bool, required=False)],
        responses={(200, "image/*"): OpenApiResponse(description="the image bytes")},
    )
    def get(self, request, image_id):  # type: ignore[no-untyped-def]
        image = media_selectors.get_image(self.principal, image_id)
        thumb = request.query_params.get("thumb") in ("1", "true")
        sha, mime = image.blob_id, image.mime
        if thumb and image.thumbnail_id:
            sha = image.thumbnail_id
            mime = "image/webp" if sha != image.blob_id else image.mime
        etag = f'"{sha}"'
        if request.headers.get("If-None-Match") == etag:
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(get_blob_store().read_bytes(sha), content_type=mime)
        response["ETag"] = etag
        response["Cache-Control"] = "private, max-age=300"
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Content-Disposition"] = "inline"
        return response


# --- artifacts ---------------------------------------------------------------------------------
class RunArtifactsView(TrackerView):
    @extend_schema(responses=s.ArtifactOut(many=True))
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        return self.page(media_selectors.artifacts_for_run(run), s.ArtifactOut)

    @extend_schema(request=s.ArtifactIn, responses={201: s.ArtifactCreatedOut})
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)
        data = request.data if isinstance(request.data, dict) else {}
        artifact, upload = artifact_services.create_artifact(
            run,
            path=data.get("path"),
            size=data.get("size"),
            sha256=data.get("sha256"),
            part_checksums=data.get("part_checksums"),
        )
        body = dict(s.ArtifactOut(artifact, context={"request": request}).data)
        body["upload"] = upload
        return Response(body, status=201)


class ArtifactDetailView(TrackerView):
    @extend_schema(responses=s.ArtifactOut)
    def get(self, request, artifact_id):  # type: ignore[no-untyped-def]
        artifact = media_selectors.get_artifact(self.principal, artifact_id)
        return Response(s.ArtifactOut(artifact, context={"request": request}).data)


class ArtifactContentView(TrackerView):
    parser_classes: list = []

    @extend_schema(
        request={"application/octet-stream": bytes},
        parameters=[OpenApiParameter("offset", int, required=True)],
        responses=s.OffsetOut,
    )
    def put(self, request, artifact_id):  # type: ignore[no-untyped-def]
        artifact = media_selectors.get_artifact(self.principal, artifact_id, CONTRIBUTOR)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > artifact_services.CHUNK_SIZE:
            raise TooLarge(
                f"Chunks are at most {artifact_services.CHUNK_SIZE} bytes.", field="body"
            )
        offset = artifact_services.receive_chunk(
            artifact.pk, request.query_params.get("offset"), request.body
        )
        return Response({"offset": offset})


class ArtifactCompleteView(TrackerView):
    @extend_schema(request=s.CompleteIn, responses=s.ArtifactOut)
    def post(self, request, artifact_id):  # type: ignore[no-untyped-def]
        artifact = media_selectors.get_artifact(self.principal, artifact_id, CONTRIBUTOR)
        data = request.data if isinstance(request.data, dict) else {}
        done = artifact_services.complete_artifact(
            artifact.pk, data.get("parts"), data.get("sha256")
        )
        return Response(s.ArtifactOut(done, context={"request": request}).data)


class ArtifactPartsView(TrackerView):
    @extend_schema(request=s.PresignIn, responses=s.PresignOut)
    def post(self, request, artifact_id):  # type: ignore[no-untyped-def]
        artifact = media_selectors.get_artifact(self.principal, artifact_id, CONTRIBUTOR)
        data = request.data if isinstance(request.data, dict) else {}
        parts = artifact_services.presign_parts(artifact.pk, data.get("parts"))
        return Response({"parts": parts})


class ArtifactDownloadView(TrackerView):
    @extend_schema(responses={302: None, (200, "application/octet-stream"): bytes})
    def get(self, request, artifact_id):  # type: ignore[no-untyped-def]
        artifact = media_selectors.get_artifact(self.principal, artifact_id)
        url = media_selectors.artifact_download_url(artifact)
        if url is not None:
            response: HttpResponse | StreamingHttpResponse = HttpResponseRedirect(url)
        else:
            from urllib.parse import quote

            filename = media_selectors.artifact_filename(artifact)
            response = StreamingHttpResponse(
                get_blob_store().iter_chunks(artifact.blob_id),
                content_type="application/octet-stream",
            )
            response["Content-Length"] = str(artifact.size)
            response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        response["X-Content-Type-Options"] = "nosniff"
        return response
