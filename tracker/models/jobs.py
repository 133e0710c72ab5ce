"""Background jobs (rows first, Celery message second) and logdir upload bookkeeping."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .projects import Project
from .runs import Run


class JobKind(models.TextChoices):
    UPLOAD = "upload", "Logdir upload"
    ARCHIVE = "archive", "Archive upload"
    EXPORT = "export", "Export"


class JobState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class IngestJob(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.PENDING)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True, default="")
    runs_mode = models.CharField(max_length=8, default="merge")
    # {"runs": n, "points": n, "images": n, ...}
    summary = models.JSONField(default=dict, blank=True)
    # [{"file": path, "offset": n, "kind": str, "message": str}]
    problems = models.JSONField(default=list, blank=True)
    # For archive jobs: the uploaded archive's blob.
    source_blob = models.CharField(max_length=64, blank=True, default="")
    attempts = models.IntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the Celery message was last sent; the reconciler re-sends stale pending/running jobs.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "updated_at"], name="job_state_updated")]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.state})"


class UploadFile(models.Model):
    """One tfevents (or side) file of a logdir, identified by its path within the project.

    Bytes arrive as chunks (UploadChunk); parsing advances `bytes_parsed` to the end of the
    last complete record, so a re-upload or an appended file resumes where it stopped.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="upload_files")
    relative_path = models.CharField(max_length=1024)
    job = models.ForeignKey(
        IngestJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="files"
    )
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    key_prefix = models.CharField(max_length=255, blank=True, default="")
    bytes_received = models.BigIntegerField(default=0)
    bytes_parsed = models.BigIntegerField(default=0)
    # Parser state carried between increments (e.g. purge bookkeeping).
    parse_state = models.JSONField(default=dict, blank=True)
    # sha256 of the first KiB: tells a different file that happens to reuse a path.
    head_sha256 = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "relative_path"], name="uniq_upload_file")
        ]

    def __str__(self) -> str:
        return self.relative_path


class UploadChunk(models.Model):
    file = models.ForeignKey(UploadFile, on_delete=models.CASCADE, related_name="chunks")
    offset = models.BigIntegerField()
    length = models.BigIntegerField()
    blob_sha256 = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["file", "offset"], name="uniq_chunk")]

    def __str__(self) -> str:
        return f"{self.file_id}@{self.offset}"


class IdempotencyRecord(models.Model):
    """The first response to a write carrying an Idempotency-Key, replayed on retries."""

    scope = models.CharField(max_length=100)  # e.g. "run:42:metrics"
    key = models.CharField(max_length=100)
    status_code = models.IntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="uniq_idempotency")]
        indexes = [models.Index(fields=["created_at"], name="idem_created")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"
