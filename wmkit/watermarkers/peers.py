"""Baselines from the ``invisible-watermark`` package: DwtDct, DwtDctSvd, RivaGAN.

They are the reference every other scheme is compared against, so they are
wrapped as they are: the package's own encoders and decoders on uint8 BGR
arrays (RivaGAN through its bundled ONNX models). The package refuses images
under 256 x 256 pixels in area, and so do we, up front, with a clear message.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError, require
from ..imageio import from_uint8, to_uint8
from ..registry import register_watermarker
from .base import BitWatermarker


class _InvisibleWatermarkPeer(BitWatermarker):
    method: ClassVar[str]  # the package's name for the method
    min_pixels = 256 * 256

    def __init__(self, *, num_bits: int = 32, calibration: Any = "auto"):
        super().__init__(num_bits=num_bits, calibration=calibration)
        self._imwatermark = require("imwatermark", f"the '{self.method}' baseline", "invisible-watermark")

    def _embed_bits(self, images: list[torch.Tensor], bits: np.ndarray) -> list[torch.Tensor]:
        encoder = self._imwatermark.WatermarkEncoder()
        encoder.set_watermark("bits", [int(b) for b in bits])
        out = []
        for image in images:
            bgr = np.ascontiguousarray(to_uint8(image)[..., ::-1])
            marked = encoder.encode(bgr, self.method)
            out.append(from_uint8(np.ascontiguousarray(marked[..., ::-1])))
        return out

    def decode_bits(self, images: list[torch.Tensor]) -> np.ndarray:
        decoder = self._imwatermark.WatermarkDecoder("bits", self.num_bits)
        rows = []
        for image in images:
            bgr = np.ascontiguousarray(to_uint8(image)[..., ::-1])
            rows.append(np.asarray(decoder.decode(bgr, self.method), dtype=np.uint8))
        return np.stack(rows) if rows else np.zeros((0, self.num_bits), dtype=np.uint8)


@register_watermarker("dwtdct")
class DwtDct(_InvisibleWatermarkPeer):
    """Frequency-domain mark (DWT + DCT) as shipped with Stable Diffusion's scripts."""

    method = "dwtDct"


@register_watermarker("dwtdctsvd")
class DwtDctSvd(_InvisibleWatermarkPeer):
    """DWT + DCT + SVD variant: more robust, slower."""

    method = "dwtDctSvd"


@register_watermarker("rivagan")
class RivaGan(_InvisibleWatermarkPeer):
    """RivaGAN's attention-based encoder/decoder (bundled ONNX models, 32 bits only)."""

    method = "rivaGan"

    def __init__(self, *, num_bits: int = 32, calibration: Any = "auto"):
        if num_bits != 32:
            raise ConfigError("rivagan carries exactly 32 bits (num_bits=32)")
        super().__init__(num_bits=num_bits, calibration=calibration)
        require("onnxruntime", "the RivaGAN baseline")
        self._imwatermark.WatermarkEncoder.loadModel()
