"""Read API: list runs, fetch full-resolution history, images and artifacts.

Built on the contract's "Reads" section. Series come from the streamed JSON Lines export, so a
million-point series never needs one giant JSON document in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._values import decode_value
from .artifacts import download_artifact
from .config import resolve, validate_project
from .http import ApiError, HttpClient, get_client

Point = tuple[int, float | None, float | int]


class Client:
    """Read-side entry point: `Client().runs("ws/p")`, `Client().run(42).history(["loss"])`."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        settings = resolve(url=url, token=token)
        self.url = settings.url
        self.http: HttpClient = get_client(settings.url, settings.require_token(), interactive=True)

    def me(self) -> dict[str, Any]:
        return self.http.call("GET", "/api/v1/me/")

    def runs(
        self,
        project: str,
        filter: str | None = None,  # noqa: A002 - mirrors the API's query parameter
        *,
        sort: str | None = None,
        limit: int | None = None,
    ) -> list[ApiRun]:
        """Runs of a project, newest first; `filter`/`sort` use the runs-table language, e.g.
        `runs("acme/vision", "params.lr < 0.01 and tags contains 'baseline'")`."""
        validate_project(project)
        if not filter and not sort:
            items = self.http.paginate(f"/api/v1/projects/{project}/runs/", limit=limit)
            return [ApiRun(self, item) for item in items]
        params: dict[str, Any] = {"limit": min(limit or 1000, 1000), "total": "false"}
        if filter:
            params["filter"] = filter
        if sort:
            params["sort"] = sort
        items = self.http.paginate(f"/api/v1/projects/{project}/runs/table", params, limit=limit)
        return [ApiRun(self, item) for item in items]

    def run(self, run_id: int | str) -> ApiRun:
        return ApiRun(self, self.http.call("GET", f"/api/v1/runs/{int(run_id)}/"))


class ApiRun:
    """A run as the server sees it (a snapshot; `refresh()` re-reads it)."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"<ApiRun {self.data.get('id')} {self.data.get('name')!r} {self.data.get('status')}>"

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.data.get("params") or {})

    def refresh(self) -> ApiRun:
        self.data = self._client.http.call("GET", f"/api/v1/runs/{self.id}/")
        return self

    def iter_points(self, keys: Iterable[str] | None = None) -> Iterator[tuple[str, Point]]:
        """(key, (step, wall_time, value)) at full resolution from the JSON Lines export."""
        params: dict[str, Any] = {"format": "jsonl"}
        if keys:
            params["keys"] = ",".join(keys)
        with self._client.http.stream(
            "GET", f"/api/v1/runs/{self.id}/series/export", params=params
        ) as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                yield from _parse_export_line(json.loads(line))

    def series(self, keys: Iterable[str] | None = None) -> dict[str, list[Point]]:
        out: dict[str, list[Point]] = {}
        for key, point in self.iter_points(keys):
            out.setdefault(key, []).append(point)
        return out

    def history(self, keys: Iterable[str] | None = None, *, pandas: bool = False) -> Any:
        """Rows `{"step", "wall_time", key: value, ...}` merged by step, ordered by step; a
        pandas DataFrame instead when `pandas=True` (requires pandas)."""
        rows: dict[int, dict[str, Any]] = {}
        for key, (step, wall, value) in self.iter_points(keys):
            row = rows.setdefault(step, {"step": step, "wall_time": wall})
            if wall is not None and (row["wall_time"] is None or wall > row["wall_time"]):
                row["wall_time"] = wall
            row[key] = value
        ordered = [rows[s] for s in sorted(rows)]
        if pandas:
            try:
                import pandas as pd
            except ImportError as exc:
                raise ImportError("history(pandas=True) needs `pip install pandas`") from exc
            return pd.DataFrame(ordered)
        return ordered

    def media(self, kind: str, key: str | None = None) -> list[dict[str, Any]] | None:
        """Entries of `histograms`, `text` or `pr-curves` (one key, or every key), each with
        its "key"; None when the server has no such read endpoint."""
        path = f"/api/v1/runs/{self.id}/media/{kind}"
        http = self._client.http
        try:
            keys = [key] if key else [t["key"] for t in http.call("GET", path).get("tags", [])]
            out: list[dict[str, Any]] = []
            for k in keys:
                page = http.call("GET", path, params={"key": k, "limit": 10000}) or {}
                out.extend({"key": k, **entry} for entry in page.get("entries", []))
            return out
        except ApiError as exc:
            if exc.status in (404, 405):
                return None
            raise

    def histograms(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.media("histograms", key) or []

    def text(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.media("text", key) or []

    def pr_curves(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.media("pr-curves", key) or []

    def images(self, tag: str | None = None) -> list[dict[str, Any]]:
        params = {"key": tag} if tag else None
        return list(self._client.http.paginate(f"/api/v1/runs/{self.id}/images/", params))

    def artifacts(self) -> list[dict[str, Any]]:
        return list(self._client.http.paginate(f"/api/v1/runs/{self.id}/artifacts/"))

    def download_artifact(self, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        return download_artifact(self._client.http, self.id, path, dest)


def _parse_export_line(obj: Any) -> Iterator[tuple[str, Point]]:
    """Accept one point per line (`{"key","step","wall_time","value"}`) or one series per
    line (`{"key", "points": [[step, wall_time, value], ...]}`)."""
    if not isinstance(obj, dict) or "key" not in obj:
        return
    key = obj["key"]
    if "points" in obj:
        for point in obj["points"]:
            step, wall, value = point[0], point[1], point[2]
            yield key, (int(step), wall, decode_value(value))
    elif "step" in obj:
        yield key, (int(obj["step"]), obj.get("wall_time"), decode_value(obj.get("value")))
