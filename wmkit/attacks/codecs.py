"""Lossy codecs: real JPEG and WebP through Pillow, and Kornia's differentiable JPEG for training.

A codec is lossy at every quality, so no quality value is a no-op. Strength 0 is therefore an
explicit "off" state (``JPEG.from_strength(0)``, spec "jpeg@0", per-image param "off"); for
s > 0, quality = round(100 - 90 s), so strength 1 is quality 10. "jpeg:100" runs the codec.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from kornia.enhance import jpeg_codec_differentiable
from PIL import Image

from ..registry import register_attack
from .base import Attack, NaturalParam, Params

_QUALITY = NaturalParam(
    "quality", int, low=1, high=100, default=75, at_zero=100, at_one=10, identity=None, unit="Pillow quality",
)


def _pillow_roundtrip(image: torch.Tensor, format: str, quality: int) -> torch.Tensor:
    """Encode one (C, H, W) image as 8-bit `format` and decode it, as a file on disk would be."""
    pixels = (image.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    array = pixels.permute(1, 2, 0).numpy()
    mode = "RGB" if array.shape[2] == 3 else "L"
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if mode == "L" else array).save(buffer, format=format, quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        result = np.asarray(decoded.convert(mode), dtype=np.uint8).copy()
    result = result.reshape(result.shape[0], result.shape[1], -1)
    return torch.from_numpy(result).permute(2, 0, 1).to(device=image.device, dtype=image.dtype) / 255.0


class _PillowCodec(Attack):
    """Round-trip each image through a Pillow encoder; not differentiable (no gradient)."""

    format = "JPEG"
    param = _QUALITY
    channels = (1, 3)
    differentiable = False

    def __init__(self, *, quality: int = 75) -> None:
        super().__init__()
        self.quality = self._validated(quality)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        out = []
        for image, quality, off in zip(images, params["quality"].tolist(), params["off"].tolist()):
            # Images switched off keep their pixels (the base class copies them anyway);
            # skipping them just saves the encode.
            out.append(image if off else _pillow_roundtrip(image, self.format, int(round(quality))))
        return torch.stack(out)


@register_attack("jpeg")
class JPEG(_PillowCodec):
    """Real JPEG via Pillow (libjpeg, 4:2:0 chroma subsampling), ``quality`` 1..100, default 75."""

    format = "JPEG"


@register_attack("webp")
class WebP(_PillowCodec):
    """Lossy WebP via Pillow (libwebp), ``quality`` 1..100, default 75; still lossy at 100."""

    format = "WEBP"


@register_attack("jpeg_diff")
class DifferentiableJPEG(Attack):
    """Kornia's differentiable JPEG (``kornia.enhance.jpeg_codec_differentiable``, Reich et al. 2024).

    A training surrogate: it models JPEG's colour conversion, chroma subsampling, DCT and
    quantisation with a differentiable rounding, so gradients reach the input. Use "jpeg"
    (the real codec) for evaluation. RGB only; ``quality`` is a float in [1, 100].
    """

    param = NaturalParam(
        "quality", float, low=1.0, high=100.0, default=75.0, at_zero=100.0, at_one=10.0, identity=None,
        unit="JPEG quality",
    )
    channels = (3,)

    def __init__(self, *, quality: float = 75.0) -> None:
        super().__init__()
        self.quality = self._validated(quality)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return jpeg_codec_differentiable(images, params["quality"].to(images.dtype))
