"""Runs and their params."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .projects import Project


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    CRASHED = "crashed", "Crashed"


class RunSource(models.TextChoices):
    CLIENT = "client", "Client"
    UPLOAD = "upload", "Upload"


class Run(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=RunSource.choices, default=RunSource.CLIENT)
    # For uploads: the run's directory relative to the logdir root ("" for the root itself).
    source_path = models.CharField(max_length=1024, blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["project", "-created_at", "-id"], name="run_project_created"),
            models.Index(fields=["project", "name"], name="run_project_name"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "source_path"],
                condition=models.Q(source="upload"),
                name="uniq_upload_run_path",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


class ParamType(models.TextChoices):
    NUMBER = "number", "Number"
    STRING = "string", "String"
    BOOL = "bool", "Boolean"
    NULL = "null", "Null"
    JSON = "json", "JSON"


class Param(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="params")
    key = models.CharField(max_length=255)
    value = models.JSONField(null=True)
    type = models.CharField(max_length=8, choices=ParamType.choices)
    # Typed shadows of `value` so the runs table can sort and filter with plain indexes.
    value_num = models.FloatField(null=True)
    # Null (not "") marks "not a string param", so sorting puts other types apart.
    value_str = models.CharField(max_length=1024, null=True)  # noqa: DJ001

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="uniq_param")]
        indexes = [
            # Filter/sort by a numeric (or string) param: an ordered range scan per key that
            # carries run_id (and type, which number filters check) so it needs no heap visit.
            models.Index(
                fields=["key", "value_num", "run"], include=["type"], name="param_key_num_run"
            ),
            models.Index(
                fields=["key", "value_str", "run"], include=["type"], name="param_key_str_run"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}"


class ColumnKeyKind(models.TextChoices):
    PARAM = "param", "Param"
    METRIC = "metric", "Metric"


class ColumnKey(models.Model):
    """Param/series keys ever written in a project: the column chooser's candidates.

    Filled by PostgreSQL triggers on tracker_param / tracker_series inserts (migration
    0002_perf_runs_table), so every writer (services, bulk_create, raw SQL) is covered.
    Rows are never deleted when runs go away, so readers must re-check each candidate
    against the runs they may see (tracker.selectors.runs_table.discover_columns). No
    unique constraint on purpose: concurrent first writers of a key may both add a row,
    which readers collapse with DISTINCT, and no writer ever waits on another.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=ColumnKeyKind.choices)
    key = models.CharField(max_length=255)

    class Meta:
        indexes = [models.Index(fields=["project", "kind", "key"], name="columnkey_lookup")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.kind}:{self.key}"
