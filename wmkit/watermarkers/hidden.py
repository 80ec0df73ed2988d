"""HiDDeN (Zhu et al., 2018): a learned encoder writes the message, a learned extractor reads it.

Post-hoc scheme ``hidden``: the encoder of wmkit's HiDDeN pre-training (the pair Stable
Signature's extractor comes from) adds its residual to the image, scaled so the marked image
has the target PSNR (default 38 dB) exactly. Detection: the whitened extractor's logits,
bits = logit > 0, binomial test on the matches (or the calibrated null, ``wmkit calibrate``).

``ExtractorBits`` is the shared reading half: any scheme whose bits come from an extractor
network (``hidden``, ``stable_signature``) inherits its loading and decoding.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from ..errors import ConfigError, WeightsError
from ..registry import register_watermarker
from .base import BitWatermarker, break_ties

DEFAULT_EXTRACTOR = "tiny"


def load_extractor(spec: Any) -> tuple[torch.nn.Module, Optional[torch.nn.Module], str]:
    """(extractor, encoder or None, name) from "tiny" (weights/hidden), a wmkit HiDDeN folder,
    an official Stable Signature TorchScript file, or a module mapping images to logits."""
    from ..models.hidden import default_hidden_dir, load_hidden, load_torchscript_extractor

    if isinstance(spec, torch.nn.Module):
        return spec.eval(), None, type(spec).__name__
    if spec == DEFAULT_EXTRACTOR:
        folder = default_hidden_dir()
        if not (folder / "extractor.safetensors").is_file():
            raise WeightsError(f"the default HiDDeN extractor is missing ({folder}); train it with `python -m wmkit.train.hidden`")
        encoder, extractor, _ = load_hidden(folder)
        return extractor, encoder, DEFAULT_EXTRACTOR
    path = Path(os.fspath(spec))
    if path.is_dir():
        encoder, extractor, _ = load_hidden(path)
        return extractor, encoder, str(path)
    if path.is_file():
        return load_torchscript_extractor(path), None, str(path)
    raise WeightsError(f"{path}: no such extractor (a wmkit HiDDeN folder or a TorchScript file)")


class ExtractorBits(BitWatermarker):
    """Bits read by an extractor network: one logit per bit, bit = logit > 0."""

    masks_given_payload: ClassVar[bool] = True  # see BitWatermarker.message

    def __init__(self, *, extractor: Any = DEFAULT_EXTRACTOR, calibration: Any = "auto"):
        # the number of bits is the extractor's, not an option: known once it is loaded
        # (lazily, so that `wmkit list` and error paths never need the weights)
        known = (int(getattr(extractor, "num_bits", 0)) or None) if isinstance(extractor, torch.nn.Module) else None
        super().__init__(num_bits=known, calibration=calibration)
        self._extractor_spec = extractor
        self._loaded: Optional[tuple] = None
        self._digest: Optional[str] = None

    def _load(self) -> tuple:
        if self._loaded is None:
            self._loaded = load_extractor(self._extractor_spec)
        return self._loaded

    @property
    def extractor(self) -> torch.nn.Module:
        return self._load()[0]

    def missing_default_model(self) -> Optional[str]:
        """Why the extractor cannot be loaded (None when it can)."""
        try:
            self._load()
        except WeightsError as exc:
            return str(exc)
        return None

    @property
    def num_bits(self) -> int:  # type: ignore[override]
        if self._num_bits is None:
            module = self.extractor
            self._num_bits = int(getattr(module, "num_bits", 0)) or int(self.logits([torch.zeros(3, 64, 64)]).shape[-1])
        return self._num_bits

    @property
    def model_name(self) -> str:
        return self._load()[2]

    def extractor_digest(self) -> str:
        """12 hex digits of sha256 over the extractor's weights: tells retrained weights
        behind the same name apart (e.g. for caches of what was made against them)."""
        if self._digest is None:
            from ..models import weights_digest

            self._digest = weights_digest({"": self.extractor})  # the same digest as before: names unprefixed
        return self._digest

    def config(self) -> dict[str, Any]:
        spec = self._extractor_spec
        return {"extractor": spec if isinstance(spec, str) else self.model_name}

    @torch.no_grad()
    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        module = self.extractor
        return torch.cat([module(img[None].float()) for img in images]) if images else torch.zeros(0, self.num_bits)

    def decode_bits(self, images: list[torch.Tensor]) -> np.ndarray:
        """The bits on the image (for a key with a given message: the masked ones, see `message`)."""
        logits = self.logits(images)
        bits = (logits > 0).numpy().astype(np.uint8)
        for row in torch.nonzero((logits == 0).any(1)).flatten().tolist():
            bits[row] = break_ties(bits[row], (logits[row] == 0).numpy(), images[row])
        return bits


@register_watermarker("hidden")
class Hidden(ExtractorBits):
    """HiDDeN post-hoc marking with wmkit's trained encoder, scaled to a target PSNR."""

    min_side: ClassVar[int] = 32

    def __init__(self, *, psnr: float = 38.0, extractor: Any = DEFAULT_EXTRACTOR, calibration: Any = "auto"):
        if not 20.0 <= float(psnr) <= 60.0:
            raise ConfigError(f"psnr must be between 20 and 60 dB, got {psnr!r}")
        super().__init__(extractor=extractor, calibration=calibration)
        self.psnr = float(psnr)

    @torch.no_grad()
    def _embed_bits(self, images: list[torch.Tensor], bits: np.ndarray) -> list[torch.Tensor]:
        encoder = self._load()[1]
        if encoder is None:
            raise WeightsError(f"the extractor {self.model_name} comes without an encoder: `hidden` cannot mark with it")
        message = torch.as_tensor(bits, dtype=torch.float32)[None]
        out = []
        for img in images:
            residual = encoder(img[None].float(), message)[0]
            # scale the residual so the marked image has the target PSNR (before clipping)
            rms = residual.pow(2).mean().sqrt().clamp_min(1e-8)
            target_rms = 10 ** (-self.psnr / 20)
            out.append((img.float() + residual * (target_rms / rms)).clamp(0, 1).to(img.dtype))
        return out
