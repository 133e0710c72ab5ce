"""Serializers of the live-logging endpoints.

Metric, text, histogram and PR-curve bodies are validated by tracker.services.logging (a
DRF field per point would cost more than storing the point); the input serializers here
document those bodies in the OpenAPI schema, the output serializers shape every response.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import Artifact, ArtifactState, Image


def _absolute(request, url: str) -> str:  # type: ignore[no-untyped-def]
    return request.build_absolute_uri(url) if request is not None else url


# --- inputs (schema) -----------------------------------------------------------------------------
class SeriesIn(serializers.Serializer):
    key = serializers.CharField(max_length=255)
    steps = serializers.ListField(child=serializers.IntegerField(min_value=0))
    values = serializers.ListField(
        child=serializers.JSONField(), help_text='numbers or "NaN", "Infinity", "-Infinity"'
    )
    wall_times = serializers.ListField(child=serializers.FloatField(), required=False)


class MetricsIn(serializers.Serializer):
    series = SeriesIn(many=True)


class TextItemIn(serializers.Serializer):
    key = serializers.CharField(max_length=255)
    step = serializers.IntegerField(min_value=0)
    value = serializers.CharField()
    wall_time = serializers.FloatField(required=False)


class TextIn(serializers.Serializer):
    items = TextItemIn(many=True)


class HistogramItemIn(serializers.Serializer):
    key = serializers.CharField(max_length=255)
    step = serializers.IntegerField(min_value=0)
    wall_time = serializers.FloatField(required=False)
    bucket_limits = serializers.ListField(child=serializers.FloatField())
    bucket_counts = serializers.ListField(child=serializers.FloatField())
    min = serializers.FloatField(required=False, allow_null=True)
    max = serializers.FloatField(required=False, allow_null=True)
    num = serializers.FloatField(required=False, allow_null=True)
    sum = serializers.FloatField(required=False, allow_null=True)
    sum_squares = serializers.FloatField(required=False, allow_null=True)


class HistogramsIn(serializers.Serializer):
    items = HistogramItemIn(many=True)


class PRCurveItemIn(serializers.Serializer):
    key = serializers.CharField(max_length=255)
    step = serializers.IntegerField(min_value=0)
    wall_time = serializers.FloatField(required=False)
    precision = serializers.ListField(child=serializers.JSONField())
    recall = serializers.ListField(child=serializers.JSONField())
    thresholds = serializers.ListField(child=serializers.FloatField())
    tp = serializers.ListField(child=serializers.FloatField())
    fp = serializers.ListField(child=serializers.FloatField())
    tn = serializers.ListField(child=serializers.FloatField())
    fn = serializers.ListField(child=serializers.FloatField())


class PRCurvesIn(serializers.Serializer):
    items = PRCurveItemIn(many=True)


class ImagesIn(serializers.Serializer):
    meta = serializers.CharField(
        help_text='JSON list [{"key", "step", "index"?, "caption"?, "wall_time"?, "field"}]'
    )
    files = serializers.ListField(
        child=serializers.FileField(), help_text="one part per meta item, named by its field"
    )


class PartChecksumsIn(serializers.Serializer):
    algorithm = serializers.ChoiceField(choices=["crc32"])
    part_size = serializers.IntegerField(help_text="the part size they were computed over")
    values = serializers.ListField(
        child=serializers.CharField(min_length=8, max_length=8),
        help_text="base64 of each part's big-endian CRC32, in part order",
    )


class ArtifactIn(serializers.Serializer):
    path = serializers.CharField(max_length=1024)
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.CharField(
        min_length=64,
        max_length=64,
        required=False,
        help_text="omit to declare it at complete (hash while sending; see the contract)",
    )
    part_checksums = PartChecksumsIn(
        required=False,
        help_text="S3 mode: S3 then refuses any part whose bytes do not match (see the contract)",
    )


class PartIn(serializers.Serializer):
    number = serializers.IntegerField(min_value=1)
    etag = serializers.CharField()


class CompleteIn(serializers.Serializer):
    parts = PartIn(many=True, required=False)
    sha256 = serializers.CharField(
        min_length=64, max_length=64, required=False, help_text="required if not declared at create"
    )


class PresignPartIn(serializers.Serializer):
    number = serializers.IntegerField(min_value=1)
    crc32 = serializers.CharField(
        min_length=8, max_length=8, required=False, help_text="required when checksum is crc32"
    )


class PresignIn(serializers.Serializer):
    parts = PresignPartIn(many=True)


class SignedPartOut(serializers.Serializer):
    number = serializers.IntegerField()
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField(), required=False)


class PresignOut(serializers.Serializer):
    parts = SignedPartOut(many=True)


# --- outputs -------------------------------------------------------------------------------------
class StoredOut(serializers.Serializer):
    stored = serializers.IntegerField()


class ImageCreatedOut(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    step = serializers.IntegerField()
    index = serializers.IntegerField()
    sha256 = serializers.CharField(source="blob_id")
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    mime = serializers.CharField()


class ImageOut(ImageCreatedOut):
    caption = serializers.CharField()
    wall_time = serializers.FloatField(allow_null=True)
    url = serializers.SerializerMethodField()
    thumb_url = serializers.SerializerMethodField()

    def get_url(self, obj: Image) -> str:
        return _absolute(self.context.get("request"), reverse("api:image-content", args=[obj.pk]))

    def get_thumb_url(self, obj: Image) -> str:
        return self.get_url(obj) + "?thumb=1"


class ArtifactErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ArtifactOut(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.IntegerField(source="run_id")
    path = serializers.CharField()
    kind = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    state = serializers.ChoiceField(
        choices=ArtifactState.choices,
        help_text="pending → (verifying →) ready | failed; see docs/api-contract.md",
    )
    bytes_received = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    download_url = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    def get_download_url(self, obj: Artifact) -> str | None:
        if obj.state not in (ArtifactState.READY, ArtifactState.VERIFYING):
            return None
        return _absolute(
            self.context.get("request"), reverse("api:artifact-download", args=[obj.pk])
        )

    @extend_schema_field(ArtifactErrorOut(allow_null=True))
    def get_error(self, obj: Artifact) -> dict[str, str] | None:
        """Why a failed artifact failed ({code, message}); null otherwise."""
        if obj.state != ArtifactState.FAILED:
            return None
        return obj.metadata.get("error") or {"code": "checksum_mismatch", "message": ""}


class ArtifactCreatedOut(ArtifactOut):
    upload = serializers.DictField(
        allow_null=True,
        help_text='{"mode": "s3-multipart", "part_size", "checksum": "crc32"|null, "upload_id", '
        '"parts": [{"number", "url", "headers"?}] (empty without sha256: see .../parts/)} or '
        '{"mode": "chunked", "chunk_size", "offset"}; null when nothing is left to upload '
        "(ready or verifying)",
    )


class OffsetOut(serializers.Serializer):
    offset = serializers.IntegerField()
