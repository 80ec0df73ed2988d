"""HiDDeN-style watermark networks (Zhu et al., 2018) as used by Stable Signature.

- ``HiddenEncoder``: (image, message bits) -> a residual to add to the image.
- ``HiddenExtractor``: image (any size) -> one logit per bit.
  Both differ from HiDDeN where CPU training demanded it (see their docstrings).
- ``WhitenedExtractor``: the extractor followed by a ZCA whitening of its logits fitted on
  unwatermarked images (Stable Signature whitens its extractor the same way, with PCA):
  clean images then give centred, decorrelated, unit-variance outputs, so their bits are
  close to fair, independent coins and the binomial test is honest by construction. ZCA
  (rather than a PCA rotation) keeps each output aligned with its bit, so the encoder
  trained against the raw extractor still writes readable messages.
- ``TorchScriptExtractor``: the official Stable Signature extractors (TorchScript files,
  e.g. ``dec_48b_whit.torchscript.pt``) from a local path.

Saved as safetensors (fp16) with the architecture and provenance in the metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import WeightsError

# Official extractors take ImageNet-normalised images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.GELU())


class HiddenEncoder(nn.Module):
    """Message encoder: (image, bits) -> a residual in [-1, 1] (scaled by the caller).

    The message enters as a learned low-resolution *carrier map* (a linear layer from the
    bits to ``carriers`` x ``grid`` x ``grid`` values, upsampled to the image size) that is
    concatenated with image features. HiDDeN spreads the bits as constant maps instead; from
    constant maps the encoder can only make spatially varying patterns through slow,
    nonlinear interplay with the image, and on our CPU budget it stalled at 55% bit accuracy,
    where the carrier map reaches 99% in 200 steps."""

    def __init__(self, num_bits: int = 48, channels: int = 32, grid: int = 16, carriers: int = 8):
        super().__init__()
        self.num_bits, self.channels, self.grid, self.carriers = num_bits, channels, grid, carriers
        self.message = nn.Linear(num_bits, carriers * grid * grid)
        self.features = nn.Sequential(_block(3, channels), _block(channels, channels))
        self.merge = _block(channels + 3 + carriers, channels)
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1
        carrier = self.message(bits.to(x.dtype) * 2 - 1).view(-1, self.carriers, self.grid, self.grid)
        carrier = F.interpolate(carrier, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.merge(torch.cat([self.features(x), x, carrier], dim=1))
        return torch.tanh(self.out(h))


class HiddenExtractor(nn.Module):
    """Bit extractor: the image resized to ``side`` x ``side`` (any input size, read at
    relative positions, so resizing does not move the message), three strided convolutions
    and a linear layer to one logit per bit. Unlike HiDDeN's global average this reads
    positions: robust to resizing, compression and colour changes, not to crops that move
    the content (benchmarks/stable_signature.py measures it)."""

    def __init__(self, num_bits: int = 48, channels: int = 32, side: int = 64):
        super().__init__()
        self.num_bits, self.channels, self.side = num_bits, channels, side
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.GELU(), nn.Conv2d(channels, channels, 3, 2, 1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, 2, 1), nn.GELU(),
        )
        self.linear = nn.Linear(channels * (side // 8) ** 2, num_bits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images * 2 - 1, size=(self.side, self.side), mode="bilinear", antialias=True, align_corners=False)
        return self.linear(self.body(x).flatten(1))


class WhitenedExtractor(nn.Module):
    """extractor(x) -> (logits - mean) @ W^T with W the ZCA whitening of clean-image logits."""

    def __init__(self, extractor: nn.Module, num_bits: int):
        super().__init__()
        self.extractor = extractor
        self.num_bits = num_bits
        self.register_buffer("mean", torch.zeros(num_bits))
        self.register_buffer("whiten", torch.eye(num_bits))

    @torch.no_grad()
    def fit_whitening(self, logits: torch.Tensor, eps: float = 1e-6) -> None:
        """ZCA on raw extractor logits of unwatermarked images (N > num_bits of them)."""
        if logits.shape[0] <= self.num_bits:
            raise ValueError(f"whitening {self.num_bits} outputs needs more than {self.num_bits} images, got {logits.shape[0]}")
        x = logits.double()
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)
        values, vectors = torch.linalg.eigh(cov)
        whiten = vectors @ torch.diag(values.clamp_min(eps).rsqrt()) @ vectors.T
        self.mean.copy_(mean.float())
        self.whiten.copy_(whiten.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.extractor(images) - self.mean) @ self.whiten.T


class TorchScriptExtractor(nn.Module):
    """An official Stable Signature extractor (TorchScript) taking images in [0, 1]."""

    def __init__(self, module: Any, num_bits: int):
        super().__init__()
        self.module = module
        self.num_bits = num_bits
        self.register_buffer("norm_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module((images - self.norm_mean) / self.norm_std)


def load_torchscript_extractor(path: str | os.PathLike) -> TorchScriptExtractor:
    """Load e.g. Stable Signature's ``dec_48b_whit.torchscript.pt`` from a local file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such extractor file (download Stable Signature's TorchScript extractor yourself; wmkit never downloads)")
    import warnings

    try:
        with warnings.catch_warnings():  # deprecated in torch, yet the official extractors are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise WeightsError(f"{path}: not a TorchScript extractor ({str(exc).splitlines()[0]})") from exc
    with torch.no_grad():
        num_bits = int(module(torch.zeros(1, 3, 64, 64)).shape[-1])
    return TorchScriptExtractor(module, num_bits).eval()


# -- files ------------------------------------------------------------------------------------
def save_hidden(encoder: HiddenEncoder, extractor: WhitenedExtractor, folder: str | os.PathLike, *,
                provenance: dict[str, Any]) -> list[Path]:
    """encoder.safetensors + extractor.safetensors (fp16) + provenance.json in ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = extractor.extractor
    arch = {"num_bits": raw.num_bits, "channels": raw.channels, "side": raw.side,
            "encoder_channels": encoder.channels, "grid": encoder.grid, "carriers": encoder.carriers}
    meta = {"format": "wmkit-hidden", "version": "1", "arch": json.dumps(arch)}
    files = [folder / "encoder.safetensors", folder / "extractor.safetensors", folder / "provenance.json"]
    save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in encoder.state_dict().items()}, files[0], metadata=meta)
    # the whitening stays fp32: it multiplies logits whose scale fp16 would round away
    state = {k: (v.half() if v.is_floating_point() and not k.startswith(("mean", "whiten")) else v).contiguous()
             for k, v in extractor.state_dict().items()}
    save_file(state, files[1], metadata=meta)
    files[2].write_text(json.dumps({**provenance, "arch": arch}, indent=2) + "\n")
    return files


def load_hidden(folder: str | os.PathLike) -> tuple[HiddenEncoder, WhitenedExtractor, dict[str, Any]]:
    """(encoder, whitened extractor, provenance) from a folder written by ``save_hidden``; float32, eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    paths = [folder / "encoder.safetensors", folder / "extractor.safetensors"]
    for path in paths:
        if not path.is_file():
            raise WeightsError(f"{path}: missing (train it with `python -m wmkit.train.hidden`)")
    try:
        with safe_open(str(paths[1]), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "wmkit-hidden":
            raise WeightsError(f"{paths[1]}: not a wmkit HiDDeN extractor")
        arch = json.loads(meta["arch"])
        encoder = HiddenEncoder(arch["num_bits"], arch["encoder_channels"], arch["grid"], arch["carriers"])
        extractor = WhitenedExtractor(HiddenExtractor(arch["num_bits"], arch["channels"], arch["side"]), arch["num_bits"])
        encoder.load_state_dict({k: v.float() for k, v in load_file(str(paths[0])).items()})
        extractor.load_state_dict({k: v.float() for k, v in load_file(str(paths[1])).items()})
    except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{folder}: unreadable HiDDeN weights ({str(exc).splitlines()[0]})") from exc
    provenance_path = folder / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return encoder.eval(), extractor.eval(), provenance


def default_hidden_dir() -> Optional[Path]:
    from ..calibration import weights_dir

    return weights_dir() / "hidden"
