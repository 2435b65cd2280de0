"""Opening image files safely: every bad input becomes a DigitnetError with a clear message.

    load_image(path or bytes) -> PIL.Image   EXIF rotation applied; sizes checked before decoding
    small_copy(array, side) -> array         an area-averaged copy no longer than `side`

Not an image, empty, truncated, zero-size, animated or multi-frame, and decompression bombs (checked
from the header, so a 20000x20000 PNG of a few KB costs nothing) are all refused. Besides Pillow's
own formats (PNG, JPEG, WebP, AVIF, TIFF, BMP, GIF, PNM), HEIC/HEIF phone photos open through
pillow-heif, which applies their rotation as it decodes.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from digitnet.errors import DigitnetError

try:
    from pillow_heif import register_heif_opener
except ImportError:  # an install without it still reads every other format
    register_heif_opener = None
else:
    register_heif_opener()

# ISO base media "ftyp" brands of HEIF images (HEIC is HEVC-coded HEIF; AVIF is AV1-coded), to name
# the format of a photo that does not open rather than calling it "not an image".
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}

# Refuse images at or above this side or pixel count before decoding: a 20000x20000 PNG is a few KB
# on disk but 400 M pixels (1.2 GB as RGB) once decoded.
MAX_SIDE = 20000
MAX_PIXELS = 40_000_000


class ImageTooLarge(DigitnetError):
    """More pixels than allowed; the server answers it with 413 (payload too large)."""
    status = 413


def load_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file or bytes, checking size before decoding; EXIF rotation applied.

    max_pixels may only be lower than MAX_PIXELS (the server sets its own limit)."""
    max_pixels = min(max_pixels, MAX_PIXELS)
    name = "image data" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise DigitnetError("image data is empty (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DigitnetError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        if path.stat().st_size == 0:
            raise DigitnetError(f"{path}: the file is empty (0 bytes)")
        fp = path
    with warnings.catch_warnings():
        # Pillow's own bomb check only warns below 2x its limit; ours below is stricter.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fp) as im:
                check_header(im, name, max_pixels)
                im.load()
                image = ImageOps.exif_transpose(im)
                image = image.copy() if image is im else image
        except DigitnetError:
            raise
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"{name}: too large (decompression bomb?); the limit is "
                                f"{max_pixels:,} pixels and sides under {MAX_SIDE}") from None
        except Image.UnidentifiedImageError:
            head = bytes(source[:32]) if isinstance(source, (bytes, bytearray)) else read_head(fp)
            size = header_size(head)
            if size is not None and 0 in size:
                raise DigitnetError(f"{name}: the image has zero size ({size[0]}x{size[1]})") from None
            brand = head[8:12] if head[4:8] == b"ftyp" else b""
            if brand in HEIF_BRANDS and register_heif_opener is None:
                raise DigitnetError(f"{name}: a HEIC/HEIF photo; reading it needs pillow-heif "
                                    f"(pip install pillow-heif)") from None
            if brand in HEIF_BRANDS | AVIF_BRANDS:
                raise DigitnetError(f"{name}: broken or truncated HEIC/HEIF/AVIF image") from None
            raise DigitnetError(f"{name}: not an image Pillow can read (try PNG or JPEG)") from None
        except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as e:
            # RuntimeError: the AVIF and HEIF decoders' word for a corrupt frame
            raise DigitnetError(f"{name}: broken or truncated image ({e})") from None
    return image


def read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(32)


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or GIF header, which Pillow will not open when a side is 0."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:4] == b"GIF8" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return None


def check_header(im: Image.Image, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse what the header already shows to be unusable, before any pixel is decoded."""
    w, h = im.size
    if w <= 0 or h <= 0:
        raise DigitnetError(f"{name}: the image has zero size ({w}x{h})")
    if w >= MAX_SIDE or h >= MAX_SIDE or w * h > max_pixels:
        raise ImageTooLarge(f"{name}: {w}x{h} = {w * h:,} pixels is too large (decompression bomb?); the "
                            f"limit is {max_pixels:,} pixels and sides under {MAX_SIDE}")
    if getattr(im, "n_frames", 1) > 1:
        raise DigitnetError(f"{name}: an animated or multi-frame image ({im.n_frames} frames); "
                            f"save one frame as PNG or JPEG")


def enlarged(a: np.ndarray, side: int) -> np.ndarray:
    """Bicubic copy enlarged by the whole factor that brings its short side to `side` or more,
    values kept in [0, 1]. (A whole factor keeps every pixel's footprint the same.)"""
    h, w = a.shape
    factor = int(np.ceil(side / min(h, w)))
    big = Image.fromarray(a.astype(np.float32), "F").resize((w * factor, h * factor), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32).clip(0, 1)


def small_copy(a: np.ndarray, side: int) -> np.ndarray:
    """Area-averaged copy with longest side `side` (the array itself if already smaller)."""
    h, w = a.shape
    if max(h, w) <= side:
        return a
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(size, Image.BOX), dtype=np.float32)
