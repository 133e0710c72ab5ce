"""Image uploads: verify, store content-addressed, upsert rows; thumbnails in the background.

Every image of a request is decoded far enough to be trusted (Pillow identifies the real
format from the bytes, checks the pixel count from the header before decoding anything, then
`verify()`s the file) before a single byte is written, so a bad file anywhere in a batch
leaves nothing behind. The declared MIME type and file name of a part are ignored: the served
type is the sniffed one, and only PNG, JPEG, GIF and WebP pass (no SVG, no HTML).
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from django.db import transaction
from PIL import Image as PILImage

from ..models import Blob, Image, Run
from ..storage import S3BlobStore, get_blob_store
from .errors import ServiceError, TooLarge
from .logging import STEP_LIMIT
from .runs import check_key

MAX_IMAGES = 64
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
MAX_CAPTION = 1024
MAX_INDEX = 10_000
THUMB_SIZE = 256
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_UPLOAD_THREADS = 8


@dataclass
class CheckedImage:
    key: str
    step: int
    index: int
    caption: str
    wall_time: float
    data: bytes
    sha256: str
    width: int
    height: int
    mime: str


def sniff_image(data: bytes, field: str = "file") -> tuple[str, int, int]:
    """(mime, width, height) of a PNG/JPEG/GIF/WebP that Pillow verifies; else ServiceError."""
    if len(data) > MAX_IMAGE_BYTES:
        raise TooLarge(f"Images are at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB.", field=field)
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between MAX_IMAGE_PIXELS and twice that; our own limit
            # below is the one that counts.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=list(FORMATS)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise TooLarge(
                        f"Images are at most {MAX_PIXELS:,} pixels; this one is {width}x{height}.",
                        field=field,
                        code="too_many_pixels",
                    )
                img.verify()
    except ServiceError:
        raise
    except PILImage.DecompressionBombError:
        raise TooLarge(f"Images are at most {MAX_PIXELS:,} pixels.", field=field) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed files
        raise ServiceError(
            "Not a valid PNG, JPEG, GIF or WebP image (SVG and other formats are refused).",
            field=field,
            code="invalid_image",
        ) from None
    mime = FORMATS.get(fmt)
    if mime is None or width <= 0 or height <= 0:
        raise ServiceError(
            "Not a valid PNG, JPEG, GIF or WebP image.", field=field, code="invalid_image"
        )
    return mime, width, height


MAX_META_CHARS = 1 << 20


def parse_meta(raw: Any) -> list[Mapping[str, Any]]:
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        # 64 descriptions fit in far less; a huge or deeply nested meta is an attack, and
        # json.loads answers deep nesting with RecursionError, not ValueError.
        if len(raw) > MAX_META_CHARS:
            raise TooLarge(f"meta is at most {MAX_META_CHARS} characters.", field="meta")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise ServiceError("meta is not valid JSON.", field="meta") from None
    if not isinstance(raw, list) or not raw:
        raise ServiceError("meta is a non-empty JSON list of image descriptions.", field="meta")
    if len(raw) > MAX_IMAGES:
        raise TooLarge(f"At most {MAX_IMAGES} images per request.", field="meta")
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ServiceError(f"meta[{i}] must be an object.", field=f"meta[{i}]")
    return raw


def check_images(
    meta: Sequence[Mapping[str, Any]], files: Mapping[str, IO[bytes]]
) -> list[CheckedImage]:
    """Validate descriptions and bytes of a whole request; nothing is written here."""
    import hashlib

    out: list[CheckedImage] = []
    seen: set[tuple[str, int, int]] = set()
    used_fields: set[str] = set()
    for i, item in enumerate(meta):
        where = f"meta[{i}]"
        key = check_key(item.get("key"), f"{where}.key")
        step = item.get("step")
        if type(step) is not int or not 0 <= step < STEP_LIMIT:
            raise ServiceError(
                f"Steps are integers 0 <= step < 2^63; got {step!r}.", field=f"{where}.step"
            )
        index = item.get("index", 0)
        if type(index) is not int or not 0 <= index < MAX_INDEX:
            raise ServiceError(f"index is an integer 0-{MAX_INDEX - 1}.", field=f"{where}.index")
        caption = item.get("caption") or ""
        if not isinstance(caption, str) or len(caption) > MAX_CAPTION:
            raise ServiceError(
                f"caption is a string of at most {MAX_CAPTION} characters.",
                field=f"{where}.caption",
            )
        wall = item.get("wall_time")
        if wall is None:
            wall = time.time()
        elif type(wall) not in (int, float) or not math.isfinite(wall):
            raise ServiceError("wall_time is a finite number.", field=f"{where}.wall_time")
        field = item.get("field")
        if not isinstance(field, str) or field not in files:
            raise ServiceError(
                f"{where}.field must name a file part of this request.", field=f"{where}.field"
            )
        if field in used_fields:
            raise ServiceError(f"File part {field!r} is used twice.", field=f"{where}.field")
        used_fields.add(field)
        ident = (key, step, index)
        if ident in seen:
            raise ServiceError(
                f"Two images for key {key!r}, step {step}, index {index}; give each an index.",
                field=f"{where}.index",
            )
        seen.add(ident)
        upload = files[field]
        size = getattr(upload, "size", None)
        if size is not None and size > MAX_IMAGE_BYTES:
            raise TooLarge(
                f"Images are at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB.", field=field
            )
        data = upload.read(MAX_IMAGE_BYTES + 1)
        mime, width, height = sniff_image(data, field)
        out.append(
            CheckedImage(
                key=key,
                step=step,
                index=index,
                caption=caption,
                wall_time=float(wall),
                data=data,
                sha256=hashlib.sha256(data).hexdigest(),
                width=width,
                height=height,
                mime=mime,
            )
        )
    return out


def _store_blobs(images: Sequence[CheckedImage]) -> None:
    """Write each distinct blob (in parallel: S3 PUTs are latency-bound), then its Blob row."""
    store = get_blob_store()
    unique = {img.sha256: img for img in images}
    known = set(Blob.objects.filter(sha256__in=list(unique)).values_list("sha256", flat=True))
    todo = [img for sha, img in unique.items() if sha not in known]

    def put(img: CheckedImage) -> None:
        if isinstance(store, S3BlobStore):
            # One PUT under the content address, without put_bytes' HEAD first: the hash is
            # known and no row names this blob, and rewriting identical bytes is harmless.
            # Halves the S3 round trips, which dominate image logging.
            store.client.put_object(Bucket=store.bucket, Key=store.key(img.sha256), Body=img.data)
        else:
            store.put_bytes(img.data)

    if len(todo) == 1:
        put(todo[0])
    elif todo:
        with ThreadPoolExecutor(min(_UPLOAD_THREADS, len(todo))) as pool:
            list(pool.map(put, todo))
    Blob.objects.bulk_create(
        [Blob(sha256=img.sha256, size=len(img.data), mime=img.mime) for img in todo],
        ignore_conflicts=True,
    )


def store_images(run: Run, images: Sequence[CheckedImage]) -> list[Image]:
    """Write blobs, then upsert Image rows by (run, key, step, index); returns the rows."""
    from .jobs import dispatch

    _store_blobs(images)
    rows = [
        Image(
            run=run,
            key=img.key,
            step=img.step,
            index=img.index,
            wall_time=img.wall_time,
            blob_id=img.sha256,
            width=img.width,
            height=img.height,
            mime=img.mime,
            caption=img.caption,
            thumbnail=None,
        )
        for img in images
    ]
    with transaction.atomic():
        Image.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["run", "key", "step", "index"],
            update_fields=["wall_time", "blob", "width", "height", "mime", "caption", "thumbnail"],
        )
        # bulk_create with update_conflicts sets pks on PostgreSQL only; re-read to be portable.
        stored = list(
            Image.objects.filter(run=run, key__in={r.key for r in rows}).filter(
                step__in={r.step for r in rows}
            )
        )
        by_ident = {(r.key, r.step, r.index): r for r in stored}
        result = [by_ident[(r.key, r.step, r.index)] for r in rows]
        from ..tasks_media import make_thumbnails

        dispatch(make_thumbnails, [r.pk for r in result])
    return result


def log_images(run: Run, meta_raw: Any, files: Mapping[str, IO[bytes]]) -> list[Image]:
    meta = parse_meta(meta_raw)
    return store_images(run, check_images(meta, files))


# --- thumbnails ------------------------------------------------------------------------------


def make_thumbnail(image: Image) -> Blob:
    """The image itself when it is small already, else a WebP at most THUMB_SIZE on a side."""
    if image.width <= THUMB_SIZE and image.height <= THUMB_SIZE:
        return image.blob
    store = get_blob_store()
    data = store.read_bytes(image.blob_id)
    with PILImage.open(io.BytesIO(data), formats=list(FORMATS)) as img:
        img.seek(0)
        frame = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
        frame.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        frame.save(buf, format="WEBP", quality=80)
    ref = store.put_bytes(buf.getvalue())
    blob, _ = Blob.objects.get_or_create(
        sha256=ref.sha256, defaults={"size": ref.size, "mime": "image/webp"}
    )
    return blob


def make_thumbnails(image_ids: Sequence[int]) -> int:
    """Idempotent: images that already have a thumbnail (or vanished) are skipped."""
    done = 0
    for image in Image.objects.filter(
        pk__in=list(image_ids), thumbnail__isnull=True
    ).select_related("blob"):
        try:
            thumb = make_thumbnail(image)
        except Exception:  # noqa: BLE001 - a verified image Pillow cannot resize: serve original
            thumb = image.blob
        # Only if the row still shows the same blob: a concurrent re-upload made its own task.
        done += Image.objects.filter(pk=image.pk, blob_id=image.blob_id).update(thumbnail=thumb)
    return done
