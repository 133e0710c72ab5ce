"""Query-string inputs and response shapes of the read endpoints (issue 6)."""

from __future__ import annotations

from rest_framework import serializers

from tracker.selectors import series_query


class CommaList(serializers.CharField):
    """ "a,b,c" -> ["a", "b", "c"] (keys and column names never contain commas)."""

    def __init__(self, *, max_items: int = 200, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("max_length", 20000)
        super().__init__(**kwargs)
        self.max_items = max_items

    def to_internal_value(self, data):  # type: ignore[no-untyped-def]
        text = super().to_internal_value(data)
        # CharField's NUL validator sees the returned list's repr, never a raw NUL: check here
        # (PostgreSQL refuses NUL, and streamed exports would fail after their headers).
        if "\x00" in text:
            raise serializers.ValidationError("Null characters are not allowed.")
        items = [p.strip() for p in text.split(",") if p.strip()]
        if len(items) > self.max_items:
            raise serializers.ValidationError(f"At most {self.max_items} items.")
        return items


class IdList(CommaList):
    def to_internal_value(self, data):  # type: ignore[no-untyped-def]
        items = super().to_internal_value(data)
        try:
            return [int(i) for i in items]
        except ValueError:
            raise serializers.ValidationError("A comma-separated list of run ids.") from None


class RunsTableIn(serializers.Serializer):
    filter = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        max_length=100000,
        help_text='e.g. params.lr < 0.01 and metrics.val/acc.max > 0.9 and tags contains "base"',
    )
    sort = serializers.CharField(
        required=False,
        default="-created_at",
        max_length=600,
        help_text="a column, '-' prefix for descending; NULLs always last",
    )
    columns = CommaList(
        required=False,
        max_items=200,
        help_text="e.g. name,status,params.lr,metrics.val/acc.last",
    )
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=1000)
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    total = serializers.BooleanField(required=False, default=True)


class RunRowOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    params = serializers.DictField()
    metrics = serializers.DictField()


class RunsTableOut(serializers.Serializer):
    results = RunRowOut(many=True)
    columns = serializers.ListField(child=serializers.CharField())
    sort = serializers.CharField()
    total = serializers.IntegerField(allow_null=True)
    next_cursor = serializers.CharField(allow_null=True)
    prev_cursor = serializers.CharField(allow_null=True)
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class ColumnsOut(serializers.Serializer):
    fields = serializers.ListField(child=serializers.CharField())
    params = serializers.ListField(child=serializers.CharField())
    metrics = serializers.ListField(child=serializers.CharField())
    aggregates = serializers.ListField(child=serializers.CharField())


def _series_fields() -> dict:
    return {
        "keys": CommaList(
            max_items=series_query.MAX_KEYS, help_text="series keys, comma-separated"
        ),
        "max_points": serializers.IntegerField(
            required=False,
            default=1000,
            min_value=series_query.MIN_POINTS,
            max_value=series_query.MAX_POINTS,
        ),
        "x": serializers.ChoiceField(choices=series_query.X_MODES, required=False, default="step"),
        "from": serializers.FloatField(required=False, allow_null=True, help_text="x >= from"),
        "to": serializers.FloatField(required=False, allow_null=True, help_text="x <= to"),
    }


# "from" is a Python keyword, so these are built with type().
SeriesIn = type("SeriesIn", (serializers.Serializer,), _series_fields())
MultiSeriesIn = type(
    "MultiSeriesIn",
    (serializers.Serializer,),
    {**_series_fields(), "runs": IdList(max_items=100, help_text="run ids, comma-separated")},
)


class SeriesOut(serializers.Serializer):
    run = serializers.IntegerField()
    key = serializers.CharField()
    x = serializers.ListField(child=serializers.JSONField())
    step = serializers.ListField(child=serializers.IntegerField())
    value = serializers.ListField(
        child=serializers.JSONField(), help_text='numbers, or "NaN" / "Infinity" / "-Infinity"'
    )
    wall = serializers.ListField(child=serializers.JSONField())
    downsampled = serializers.BooleanField()
    count = serializers.IntegerField(help_text="points in the range before downsampling")


class SeriesListOut(serializers.Serializer):
    series = SeriesOut(many=True)


class SeriesExportIn(serializers.Serializer):
    keys = CommaList(required=False, max_items=1000)
    format = serializers.ChoiceField(choices=["csv", "jsonl"], required=False, default="csv")


class ProjectExportIn(serializers.Serializer):
    format = serializers.ChoiceField(choices=["json"], required=False, default="json")


class KeyOut(serializers.Serializer):
    key = serializers.CharField()
    kind = serializers.CharField()
    count = serializers.IntegerField()
    first_step = serializers.IntegerField(allow_null=True)
    last_step = serializers.IntegerField(allow_null=True)
    last_value = serializers.JSONField(allow_null=True)
    min = serializers.JSONField(allow_null=True)
    max = serializers.JSONField(allow_null=True)
    first_wall = serializers.FloatField(allow_null=True)
    last_wall = serializers.FloatField(allow_null=True)


class KeysOut(serializers.Serializer):
    keys = KeyOut(many=True)


class MediaIn(serializers.Serializer):
    key = serializers.CharField(required=False, max_length=255)
    limit = serializers.IntegerField(required=False, default=500, min_value=1, max_value=10000)


class HparamsIn(serializers.Serializer):
    metrics = CommaList(required=False, max_items=50)


class HparamsOut(serializers.Serializer):
    params = serializers.ListField(child=serializers.CharField())
    varying = serializers.ListField(child=serializers.CharField())
    metrics = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.DictField())
    truncated = serializers.BooleanField()
