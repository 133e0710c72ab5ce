"""Turn image-like objects into PNG/JPEG/GIF/WebP bytes.

Split in two so `log_image` stays well under a millisecond: `capture()` runs in the caller and
only snapshots the data (a copy, so the training loop may overwrite its buffer right away) and
validates the shape; `encode()` runs in the background thread and produces the bytes.

Matplotlib figures are the exception: they are rendered in the caller because matplotlib is not
thread-safe and the user may change or close the figure right after the call.

PNG encoding uses a small numpy+zlib encoder instead of Pillow: Pillow's adaptive filtering takes
~8 ms for a 256×256 RGB noise image, this takes 0.2–0.5 ms, and it skips compression entirely
when a sample shows the pixels do not compress (noise), instead of burning CPU for nothing.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
_CHANNELS = (1, 3, 4)
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


class ImageError(TypeError):
    """The object cannot be interpreted as an image."""


def sniff_mime(data: bytes | memoryview) -> str | None:
    head = bytes(data[:12])
    if head.startswith(_PNG_SIG):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(slots=True)
class Captured:
    """A snapshot taken in the caller thread; `encode()` finishes it in the background."""

    kind: str  # "encoded" (ready bytes), "decode" (bytes of another format), "pil", "array"
    data: Any
    mime: str | None = None
    layout: str | None = None  # for arrays: "HW", "HWC" or "CHW"


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _is_pil_image(obj: Any) -> bool:
    return (
        type(obj).__module__.startswith("PIL.")
        and hasattr(obj, "mode")
        and hasattr(obj, "getbands")
    )


def _is_figure(obj: Any) -> bool:
    return hasattr(obj, "savefig") and hasattr(obj, "canvas")


def array_layout(shape: tuple[int, ...], prefer_chw: bool) -> tuple[str, tuple[int, int]]:
    """Decide HW/HWC/CHW for an array shape; returns (layout, (height, width))."""
    if len(shape) == 2:
        return "HW", (shape[0], shape[1])
    if len(shape) == 3:
        chw = shape[0] in _CHANNELS
        hwc = shape[2] in _CHANNELS
        if prefer_chw and chw:
            return "CHW", (shape[1], shape[2])
        if hwc:
            return "HWC", (shape[0], shape[1])
        if chw:
            return "CHW", (shape[1], shape[2])
    raise ImageError(
        f"cannot interpret array of shape {shape} as an image: expected HW, HWC or CHW with "
        "1, 3 or 4 channels"
    )


def _squeeze_batch(arr: Any) -> Any:
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _capture_array(arr: Any, prefer_chw: bool) -> Captured:
    import numpy as np

    arr = _squeeze_batch(np.asarray(arr))
    layout, (height, width) = array_layout(arr.shape, prefer_chw)
    if height * width > MAX_PIXELS:
        raise ImageError(f"image of {height}x{width} exceeds {MAX_PIXELS} pixels")
    if height == 0 or width == 0:
        raise ImageError(f"empty image of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"unsupported image dtype {arr.dtype}")
    return Captured("array", np.array(arr, copy=True), layout=layout)


def capture(obj: Any) -> Captured:
    """Snapshot an image-like object (cheap; called on the training thread)."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return _capture_bytes(bytes(obj))
    if isinstance(obj, str | os.PathLike):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        return _capture_bytes(path.read_bytes())
    if _is_torch_tensor(obj):
        tensor = obj.detach().cpu()
        try:
            arr = tensor.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            arr = tensor.float().numpy()
        return _capture_array(arr, prefer_chw=True)
    if _is_pil_image(obj):
        width, height = obj.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"image of {height}x{width} exceeds {MAX_PIXELS} pixels")
        return Captured("pil", obj.copy())
    if _is_figure(obj) or (hasattr(obj, "figure") and _is_figure(obj.figure)):
        fig = obj if _is_figure(obj) else obj.figure
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return Captured("encoded", buf.getvalue(), mime="image/png")
    if (
        hasattr(obj, "__array__")
        or hasattr(obj, "__array_interface__")
        or isinstance(obj, list | tuple)
    ):
        return _capture_array(obj, prefer_chw=False)
    raise ImageError(
        f"cannot log {type(obj).__name__} as an image: pass a numpy array, PIL image, matplotlib "
        "figure, torch tensor, file path or encoded bytes"
    )


def _capture_bytes(data: bytes) -> Captured:
    if not data:
        raise ImageError("empty image bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image of {len(data)} bytes exceeds the {MAX_IMAGE_BYTES} byte limit")
    mime = sniff_mime(data)
    if mime is None:
        return Captured("decode", data)  # e.g. BMP/TIFF: converted to PNG in the background
    return Captured("encoded", data, mime=mime)


def to_hwc_uint8(arr: Any, layout: str) -> Any:
    """Normalize an array to uint8 HW/HWC (floats are taken as [0, 1] and clipped)."""
    import numpy as np

    if layout == "CHW":
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.uint8) * 255
    elif kind == "f":
        arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(arr: Any) -> bytes:
    """PNG bytes of a uint8 HW or HWC (C = 1..4) array."""
    import numpy as np

    if arr.dtype != np.uint8:
        raise ImageError("encode_png expects uint8")
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = arr.reshape(height, width * channels)
    raw = np.empty((height, width * channels + 1), dtype=np.uint8)
    # "Up" filter (row minus the row above): one vectorized subtraction, and it compresses
    # photos, plots and gradients far better than no filter at all.
    raw[:, 0] = 2
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
    data = raw.tobytes()
    sample = data[:16384]
    if len(zlib.compress(sample, 1)) > 0.9 * len(sample):
        # Incompressible (noise): store with filter 0 so decoders do not have to un-filter.
        raw[:, 0] = 0
        raw[:, 1:] = rows
        idat = zlib.compress(raw.tobytes(), 0)
    else:
        idat = zlib.compress(data, 1)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return _PNG_SIG + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _pil_to_array(img: Any) -> Any:
    import numpy as np

    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return to_hwc_uint8(scaled, "HW")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img)


def encode(captured: Captured) -> tuple[bytes, str]:
    """Finish a capture: (encoded bytes, mime). Runs in the background thread."""
    if captured.kind == "encoded":
        return captured.data, captured.mime or "image/png"
    if captured.kind == "array":
        data = encode_png(to_hwc_uint8(captured.data, captured.layout or "HWC"))
    elif captured.kind == "pil":
        data = encode_png(_pil_to_array(captured.data))
    elif captured.kind == "decode":
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImageError("unrecognized image bytes (install Pillow to convert)") from exc
        try:
            with Image.open(io.BytesIO(captured.data)) as img:
                img.load()
                data = encode_png(_pil_to_array(img))
        except (OSError, ValueError) as exc:
            raise ImageError(f"unrecognized image bytes: {exc}") from exc
    else:  # pragma: no cover - programming error
        raise ValueError(captured.kind)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"encoded image of {len(data)} bytes exceeds {MAX_IMAGE_BYTES} bytes")
    return data, "image/png"


def to_image_bytes(obj: Any) -> tuple[bytes, str]:
    """Capture and encode in one go (for callers that are already off the hot path)."""
    return encode(capture(obj))


def make_grid(batch: Any, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Any:
    """Tile an NHWC batch into one HWC image, like torchvision.utils.make_grid (NHWC in/out)."""
    import numpy as np

    batch = np.asarray(batch)
    n, h, w, c = batch.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = np.full(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, c),
        pad_value,
        dtype=batch.dtype,
    )
    for idx in range(n):
        r, col = divmod(idx, ncol)
        top = padding + r * (h + padding)
        left = padding + col * (w + padding)
        grid[top : top + h, left : left + w] = batch[idx]
    return grid
