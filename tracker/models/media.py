"""Media and structured summaries attached to runs, and the blob registry."""

from __future__ import annotations

from django.db import models

from .runs import Run


class Blob(models.Model):
    """A content-addressed object in the blob store; rows point here only once it is written."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    mime = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256


class Image(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="images")
    key = models.CharField(max_length=255)
    step = models.BigIntegerField()
    index = models.IntegerField(default=0)  # several images at one step (batches)
    wall_time = models.FloatField(null=True)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="+")
    width = models.IntegerField()
    height = models.IntegerField()
    mime = models.CharField(max_length=32)
    caption = models.CharField(max_length=1024, blank=True, default="")
    thumbnail = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key", "step", "index"], name="uniq_image")
        ]

    def __str__(self) -> str:
        return f"{self.key}@{self.step}"


class Histogram(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="histograms")
    key = models.CharField(max_length=255)
    step = models.BigIntegerField()
    wall_time = models.FloatField(null=True)
    # bucket i spans (bucket_limits[i-1], bucket_limits[i]] as in TensorBoard's HistogramProto.
    bucket_limits = models.JSONField()
    bucket_counts = models.JSONField()
    min = models.FloatField(null=True)
    max = models.FloatField(null=True)
    num = models.FloatField(null=True)
    sum = models.FloatField(null=True)
    sum_squares = models.FloatField(null=True)

    # What a (run, key, step) holds: logging that step again replaces these
    # (tracker.services.logging.upsert_steps); reads and exports return them.
    VALUE_FIELDS = (
        "wall_time",
        "bucket_limits",
        "bucket_counts",
        "min",
        "max",
        "num",
        "sum",
        "sum_squares",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key", "step"], name="uniq_histogram")
        ]

    def __str__(self) -> str:
        return f"{self.key}@{self.step}"


class TextEntry(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="texts")
    key = models.CharField(max_length=255)
    step = models.BigIntegerField()
    wall_time = models.FloatField(null=True)
    value = models.TextField()

    VALUE_FIELDS = ("wall_time", "value")  # as Histogram.VALUE_FIELDS

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key", "step"], name="uniq_text")]

    def __str__(self) -> str:
        return f"{self.key}@{self.step}"


class PRCurve(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="pr_curves")
    key = models.CharField(max_length=255)
    step = models.BigIntegerField()
    wall_time = models.FloatField(null=True)
    # {"precision": [...], "recall": [...], "thresholds": [...], "tp": [...], ...}
    data = models.JSONField()

    VALUE_FIELDS = ("wall_time", "data")  # as Histogram.VALUE_FIELDS

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key", "step"], name="uniq_prcurve")]

    def __str__(self) -> str:
        return f"{self.key}@{self.step}"


class ArtifactState(models.TextChoices):
    PENDING = "pending", "Pending"
    # S3 assembled the upload, the worker is checking its sha256 (large artifacts): downloadable
    # from its upload key, but not yet a content-addressed blob.
    VERIFYING = "verifying", "Verifying"
    READY = "ready", "Ready"
    # The uploaded bytes did not match the declaration; they are gone (metadata["error"] says
    # why) and creating the artifact again restarts the upload.
    FAILED = "failed", "Failed"


class ArtifactKind(models.TextChoices):
    FILE = "file", "File"
    GRAPH = "graph", "Graph"
    AUDIO = "audio", "Audio"
    EMBEDDING = "embedding", "Embedding"


class Artifact(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    path = models.CharField(max_length=1024)
    kind = models.CharField(max_length=16, choices=ArtifactKind.choices, default=ArtifactKind.FILE)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=ArtifactState.choices, default=ArtifactState.PENDING
    )
    blob = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Upload bookkeeping: S3 multipart upload id, or bytes received for chunked uploads.
    upload_id = models.CharField(max_length=1024, blank=True, default="")
    bytes_received = models.BigIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "path"], name="uniq_artifact_path")]

    def __str__(self) -> str:
        return self.path
