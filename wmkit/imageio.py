"""Load, validate and save images as float tensors (3, H, W) in [0, 1].

Real files are messy, so every conversion is explicit:
- EXIF orientation is applied (a phone photo is marked the way it is viewed);
- grayscale becomes three equal channels; palette images are expanded;
- alpha is composited onto white (the mark lives in the visible pixels);
- 16-bit and 32-bit integer/float images are scaled by their full range.
Every problem raises ``InputError`` with one line naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .types import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}  # a GIF is read as its first frame
SAVE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}

_BITS_BY_MODE = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16}


def _to_array(im: Image.Image) -> np.ndarray:
    """PIL image of any mode -> float32 (H, W, 3) in [0, 1]."""
    mode = im.mode
    if mode in _BITS_BY_MODE or mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        # 'I' holds 32-bit ints but PNG/TIFF 16-bit data usually lands there too
        full = 65535.0 if mode in _BITS_BY_MODE or arr.max(initial=0) <= 65535 else float(2**31 - 1)
        gray = np.clip(arr / full, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return np.repeat(arr[..., None], 3, axis=2).astype(np.float32)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_pixels: int = 0,
    min_side: int = 0,
) -> torch.Tensor:
    """Read one image file as a float tensor (3, H, W) in [0, 1].

    ``max_pixels`` is checked from the header, before any pixel is decoded, so a
    huge file costs no memory. ``min_pixels``/``min_side`` are a method's minimum.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise InputError(f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)")
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        # our own limit is checked from the header below; Pillow's would refuse
        # without saying the size, so it is lifted while this file is opened
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise InputError(
                    f"{path}: {width}x{height} is larger than the limit of {max_pixels} pixels "
                    f"(raise it with --max-pixels)"
                )
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = _to_array(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (unknown or unsupported format)") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied (cannot read the file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: truncated or corrupt image data ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    height, width = arr.shape[:2]
    check_size(height, width, min_pixels=min_pixels, min_side=min_side, name=str(path))
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def check_size(height: int, width: int, *, min_pixels: int = 0, min_side: int = 0, name: str = "image") -> None:
    if height < min_side or width < min_side:
        raise InputError(f"{name}: {width}x{height} is smaller than the minimum of {min_side} pixels per side")
    if height * width < min_pixels:
        side = int(np.ceil(np.sqrt(min_pixels)))
        raise InputError(
            f"{name}: {width}x{height} is smaller than the method's minimum of {min_pixels} pixels "
            f"(e.g. {side}x{side})"
        )


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding to nearest."""
    arr = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.round(arr * 255.0).astype(np.uint8)


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255.0)


def save_image(
    image: torch.Tensor,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    quality: int = 95,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write a (3, H, W) tensor; the format follows the file extension (PNG by default).

    Atomic and exclusive (``wmkit.atomic``): no half-written file under the final name, and
    without ``overwrite`` an existing file (or one another process writes meanwhile) is
    refused; so is any path in ``protect`` (the inputs); a symbolic link is never written
    through.
    """
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise InputError(f"{path}: cannot tell the output format from the extension (use .png, .jpg, .webp, ...)")
    if not overwrite:
        resolved = path.resolve()
        if any(resolved == Path(p).resolve() for p in protect):
            raise InputError(f"{path}: would overwrite its input (pass --overwrite to allow)")
    pil = Image.fromarray(to_uint8(image))
    options = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    import io

    from .atomic import TargetExists, UnsafeTarget, write_bytes

    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    try:
        write_bytes(path, buffer.getvalue(), overwrite=overwrite)
    except (TargetExists, UnsafeTarget) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def iter_image_paths(inputs: Sequence[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted).

    In a folder, files with an image extension (``IMAGE_EXTENSIONS``) are taken, and so are
    broken symbolic links with one (their load fails with an error record that says so); other
    files are left alone (the documented rule: a folder may hold notes, keys, reports).
    Files named explicitly are always yielded, whatever their extension, so a bad one gets
    an error record instead of vanishing silently.
    """
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or (p.is_symlink() and not p.exists())))
            yield from found
        else:
            yield path


def output_path(input_path: Path, out_dir: Path, *, ext: str = ".png") -> Path:
    """Output keeps the input's file name, with the output format's extension."""
    return Path(out_dir) / (Path(input_path).stem + ext)


def as_image_list(images) -> tuple[list[torch.Tensor], bool]:
    """Accept a (B, 3, H, W) tensor, one (3, H, W) tensor or a list of them.

    Returns the list and whether the input was a batched tensor (to give the
    same form back). Values must lie in [0, 1].
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images, batched = [images], False
        elif images.ndim == 4:
            images, batched = list(images), True
        else:
            raise InputError(f"expected images of shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    else:
        images, batched = list(images), False
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise InputError(f"image {i}: expected a (3, H, W) tensor, got {shape}")
        if img.numel() and (float(img.min()) < 0.0 or float(img.max()) > 1.0):
            raise InputError(f"image {i}: values must lie in [0, 1] (got {float(img.min()):.3g}..{float(img.max()):.3g})")
    return images, batched


def restore_form(images: list[torch.Tensor], batched: bool):
    return torch.stack(images) if batched else images
