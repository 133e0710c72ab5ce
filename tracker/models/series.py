"""Scalar series stored as compressed chunks (see tracker/services/series_codec.py).

One row per point costs over 60 bytes in PostgreSQL; chunks of a few thousand points with
per-chunk step range and min/max keep storage near 10 bytes a point and let range queries skip
whole chunks.
"""

from __future__ import annotations

from django.db import models

from .runs import Run


class SeriesKind(models.TextChoices):
    METRIC = "metric", "Metric"
    SYSTEM = "system", "System"  # telemetry under sys/
    HPARAM = "hparam", "HParam metric"


class Series(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="series")
    key = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=SeriesKind.choices, default=SeriesKind.METRIC)
    # Summary columns: kept current on every write so the runs table never reads points.
    count = models.BigIntegerField(default=0)
    first_step = models.BigIntegerField(null=True)
    last_step = models.BigIntegerField(null=True)
    last_value = models.FloatField(null=True)
    min_value = models.FloatField(null=True)
    max_value = models.FloatField(null=True)
    first_wall = models.FloatField(null=True)
    last_wall = models.FloatField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="uniq_series")]
        # Runs table: sort by a metric aggregate walks (key, value, run_id) in order and stops
        # after one page; filters on it are index range scans. Only the aggregates the column
        # chooser offers (last/min/max) get one: each index here makes summary updates non-HOT.
        # They also serve plain `key = ...` lookups (the old series_key index).
        indexes = [
            models.Index(fields=["key", "last_value", "run"], name="series_key_last_run"),
            models.Index(fields=["key", "min_value", "run"], name="series_key_min_run"),
            models.Index(fields=["key", "max_value", "run"], name="series_key_max_run"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"


class SeriesChunk(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="chunks")
    step_min = models.BigIntegerField()
    step_max = models.BigIntegerField()
    count = models.IntegerField()
    # NaN-ignoring min/max of the values; null when the chunk holds only non-finite values.
    vmin = models.FloatField(null=True)
    vmax = models.FloatField(null=True)
    wall_min = models.FloatField()
    wall_max = models.FloatField()
    data = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["series", "step_min"], name="chunk_series_step")]

    def __str__(self) -> str:
        return f"series {self.series_id} steps {self.step_min}..{self.step_max}"
