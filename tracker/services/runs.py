"""Runs and params."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..models import Param, ParamType, Project, Run, RunSource, RunStatus
from .errors import ServiceError

KEY_RE = re.compile(r"^[A-Za-z0-9_./:\- ]{1,255}$")
MAX_PARAMS = 5000
MAX_TAGS = 100
TERMINAL = {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CRASHED}


def check_key(key: Any, field: str = "key") -> str:
    if not isinstance(key, str) or not KEY_RE.match(key) or ".." in key.split("/"):
        raise ServiceError(
            "Keys are 1-255 characters of letters, digits, space and _ . / : -",
            field=field,
            code="invalid_key",
        )
    return key


def check_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise ServiceError(f"Tags are a list of at most {MAX_TAGS} strings.", field="tags")
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str) or not 0 < len(t) <= 100:
            raise ServiceError("Each tag is a string of 1-100 characters.", field="tags")
        if t not in out:
            out.append(t)
    return out


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_params(v, key))
        else:
            out[key] = v
    return out


def typed_param(value: Any) -> tuple[str, float | None, str | None]:
    if value is None:
        return ParamType.NULL, None, None
    if isinstance(value, bool):
        return ParamType.BOOL, float(value), "true" if value else "false"
    if isinstance(value, int | float):
        f = float(value)
        return ParamType.NUMBER, (f if math.isfinite(f) else None), None
    if isinstance(value, str):
        if len(value) > 10000:
            raise ServiceError("Param strings are at most 10,000 characters.", field="params")
        return ParamType.STRING, None, value[:1024]
    if isinstance(value, list):
        return ParamType.JSON, None, None
    raise ServiceError(
        "Param values are numbers, strings, booleans, null or lists.", field="params"
    )


def set_params(run: Run, params: Mapping[str, Any]) -> None:
    if not isinstance(params, Mapping):
        raise ServiceError("params must be an object.", field="params")
    flat = flatten_params(params)
    if len(flat) > MAX_PARAMS:
        raise ServiceError(f"At most {MAX_PARAMS} params.", field="params")
    rows = []
    for key, value in flat.items():
        check_key(key, "params")
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON cannot hold NaN/inf; keep it readable
        ptype, num, text = typed_param(value)
        rows.append(Param(run=run, key=key, value=value, type=ptype, value_num=num, value_str=text))
    with transaction.atomic():
        Param.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["run", "key"],
            update_fields=["value", "type", "value_num", "value_str"],
        )


def create_run(
    *,
    project: Project,
    user,  # type: ignore[no-untyped-def]
    name: str = "",
    tags: list[str] | None = None,
    notes: str = "",
    params: Mapping[str, Any] | None = None,
    source: str = RunSource.CLIENT,
    source_path: str = "",
) -> Run:
    tags = check_tags(tags or [])
    with transaction.atomic():
        run = Run.objects.create(
            project=project,
            name=(name or "").strip()[:255] or "run",
            created_by=user,
            tags=tags,
            notes=notes,
            source=source,
            source_path=source_path,
            started_at=timezone.now(),
        )
        if not name:
            run.name = f"run-{run.pk}"
            run.save(update_fields=["name"])
        if params:
            set_params(run, params)
    return run


def update_run(run: Run, **fields: Any) -> Run:
    changed: list[str] = []
    if "name" in fields:
        name = str(fields["name"]).strip()
        if not 0 < len(name) <= 255:
            raise ServiceError("Names are 1-255 characters.", field="name")
        run.name = name
        changed.append("name")
    if "tags" in fields:
        run.tags = check_tags(fields["tags"])
        changed.append("tags")
    if "notes" in fields:
        run.notes = str(fields["notes"])
        changed.append("notes")
    if "status" in fields:
        status = fields["status"]
        if status not in RunStatus.values:
            raise ServiceError("Unknown status.", field="status")
        run.status = status
        changed.append("status")
        if status in TERMINAL:
            run.ended_at = timezone.now()
            changed.append("ended_at")
        else:
            run.ended_at = None
            changed.append("ended_at")
    if changed:
        run.save(update_fields=[*changed, "updated_at"])
    return run


def delete_run(run: Run) -> None:
    run.delete()
