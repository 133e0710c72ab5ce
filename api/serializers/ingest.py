"""Serializers of the logdir upload endpoints and of ingest jobs."""

from __future__ import annotations

from rest_framework import serializers

from tracker.selectors.jobs import JobView

from .core import project_url


class UploadFileIn(serializers.Serializer):
    path = serializers.CharField(max_length=1024, trim_whitespace=False)
    size = serializers.IntegerField(min_value=0, required=False)
    head_sha256 = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="sha256 of the file's first KiB: a different file under a known path restarts",
    )


class UploadIn(serializers.Serializer):
    runs_mode = serializers.ChoiceField(choices=["merge", "dirs"], default="merge")
    root_name = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="display name of a run at the logdir root (the logdir's basename)",
    )
    files = UploadFileIn(many=True, allow_empty=False)


class ArchiveIn(serializers.Serializer):
    file = serializers.FileField()
    runs_mode = serializers.ChoiceField(choices=["merge", "dirs"], default="merge")


class JobFileOut(serializers.Serializer):
    path = serializers.CharField()
    bytes_received = serializers.IntegerField()
    bytes_parsed = serializers.IntegerField()


class ProblemOut(serializers.Serializer):
    file = serializers.CharField()
    offset = serializers.IntegerField()
    kind = serializers.CharField()
    message = serializers.CharField()


class JobSummaryOut(serializers.Serializer):
    runs = serializers.IntegerField()
    points = serializers.IntegerField()
    images = serializers.IntegerField()
    histograms = serializers.IntegerField()
    texts = serializers.IntegerField()
    skipped_records = serializers.IntegerField()


class JobOut(serializers.Serializer):
    """Built from a `JobView` (selectors.jobs), not from the model directly."""

    id = serializers.IntegerField(source="job.id")
    kind = serializers.CharField(source="job.kind")
    state = serializers.CharField(source="job.state")
    runs_mode = serializers.CharField(source="job.runs_mode")
    progress = serializers.FloatField()
    error = serializers.CharField(source="job.error")
    summary = JobSummaryOut()
    problems = ProblemOut(many=True)
    files = JobFileOut(many=True)
    project = serializers.SerializerMethodField()
    project_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="job.created_at")
    started_at = serializers.DateTimeField(source="job.started_at", allow_null=True)
    finished_at = serializers.DateTimeField(source="job.finished_at", allow_null=True)

    def get_project(self, obj: JobView) -> str:
        p = obj.job.project
        return f"{p.workspace.slug}/{p.slug}"

    def get_project_url(self, obj: JobView) -> str:
        return project_url(obj.job.project)

    def to_representation(self, instance: JobView):  # type: ignore[no-untyped-def]
        data = super().to_representation(instance)
        data["summary"] = {**instance.summary, **data["summary"]}  # keep extra counters
        return data


class JobListOut(serializers.Serializer):
    """One row of a project's job list (no per-file detail)."""

    id = serializers.IntegerField()
    kind = serializers.CharField()
    state = serializers.CharField()
    progress = serializers.FloatField()
    error = serializers.CharField()
    summary = serializers.JSONField()
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class BytesReceivedOut(serializers.Serializer):
    bytes_received = serializers.IntegerField()
