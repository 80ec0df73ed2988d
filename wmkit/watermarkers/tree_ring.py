"""Tree-Ring (Wen et al., 2023): a key pattern in the Fourier transform of the initial noise.

Marking: the centred 2-D FFT of one latent channel of the initial noise z_T is
overwritten inside a disc of radius r (the key region) by a key pattern; the
result goes back through the inverse FFT and is handed to the pipeline with
``latents=``. Detection: VAE-encode, DDIM-invert (empty prompt, guidance 1) to
estimate z_T, and compare its Fourier coefficients in the key region with the key.

Two differences from the reference code, both for honest statistics:
- Patterns are **Hermitian-symmetric** (K(-f) = conj K(f)), so the marked latent
  is real without discarding an imaginary part; the reference code takes
  ``.real`` after writing a non-symmetric pattern, which silently halves it.
- The test uses only the **independent** coefficients (one of each conjugate
  pair, the DC term excluded). For white noise with variance v those are complex
  Gaussians with real and imaginary parts of variance v*h*w/2, so
  eta = sum |K - Y|^2 / sigma^2 is non-central chi-square with 2|M| degrees of
  freedom and noncentrality sum |K|^2 / sigma^2 (``stats.log_noncentral_chi2_p_value``).
  Counting both halves of each pair, as usually done, doubles the evidence.
v is estimated per image from the inverted latent channel itself.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import numpy as np
import torch

from .. import stats
from ..errors import ConfigError
from ..imageio import as_image_list
from ..keys import Key
from ..registry import register_watermarker
from ..types import DetectionResult
from .base import ScoreWatermarker

PATTERNS = ("ring", "zeros", "rand")


def _frequency_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer frequency coordinates of the centred (fftshift-ed) spectrum."""
    fy = torch.arange(height) - height // 2
    fx = torch.arange(width) - width // 2
    return torch.meshgrid(fy, fx, indexing="ij")


def key_region(height: int, width: int, radius: int) -> torch.Tensor:
    """Disc of the given radius around DC in the centred spectrum, DC excluded."""
    fy, fx = _frequency_grid(height, width)
    dist2 = fy**2 + fx**2
    return (dist2 <= radius**2) & (dist2 > 0)


def independent_half(height: int, width: int) -> torch.Tensor:
    """One coefficient of each conjugate pair (f, -f): fy > 0, or fy == 0 and fx > 0.

    For even sizes the Nyquist row/column pairs with itself modulo the size; the
    key region never reaches it for radius < min(h, w) / 2, which is enforced."""
    fy, fx = _frequency_grid(height, width)
    return (fy > 0) | ((fy == 0) & (fx > 0))


def _mirror(grid: torch.Tensor) -> torch.Tensor:
    """Value at -f for every f of a centred even-sized spectrum (index (-i) mod n around the centre)."""
    height, width = grid.shape[-2:]
    iy = (-(torch.arange(height) - height // 2)) % height
    ix = (-(torch.arange(width) - width // 2)) % width
    iy = (iy + height // 2) % height
    ix = (ix + width // 2) % width
    return grid[..., iy[:, None], ix[None, :]]


def _hermitian(pattern: torch.Tensor) -> torch.Tensor:
    """Keep the pattern on the independent half and fill the rest with conjugates."""
    height, width = pattern.shape[-2:]
    half = independent_half(height, width)
    mirrored = torch.conj(_mirror(pattern))
    out = torch.where(half, pattern, mirrored)
    fy, fx = _frequency_grid(height, width)
    return torch.where((fy == 0) & (fx == 0), torch.zeros_like(out), out)


def make_pattern(kind: str, key: Key, height: int, width: int, radius: int) -> torch.Tensor:
    """The key's complex pattern (centred spectrum, Hermitian) for one latent channel.

    rand: the spectrum of a key-seeded Gaussian noise field (so the marked latent
    keeps white-noise statistics); zeros: all zeros; ring: constant along rings
    of integer radius, the value of ring k taken from the key-seeded spectrum
    (the reference code's 'ring' pattern, made Hermitian)."""
    if kind not in PATTERNS:
        raise ConfigError(f"unknown Tree-Ring pattern '{kind}' (choose from {', '.join(PATTERNS)})")
    noise = torch.randn(height, width, generator=key.torch_generator("tree_ring/pattern"), dtype=torch.float64)
    spectrum = torch.fft.fftshift(torch.fft.fft2(noise))
    if kind == "zeros":
        pattern = torch.zeros_like(spectrum)
    elif kind == "rand":
        pattern = spectrum
    else:
        fy, fx = _frequency_grid(height, width)
        ring = torch.sqrt((fy**2 + fx**2).double()).round().long()
        values = spectrum[height // 2, width // 2 + torch.arange(radius + 1)].real.to(spectrum.dtype)
        pattern = torch.where(ring <= radius, values[ring.clamp(max=radius)], spectrum)
    return _hermitian(pattern)


def _latent_shape(pipe, args: tuple, kwargs: dict) -> tuple[int, int, int, int]:
    """The initial-latent shape a Stable Diffusion (or SDXL) call would use."""
    prompt = kwargs.get("prompt", args[0] if args else None)
    if prompt is not None:
        batch = 1 if isinstance(prompt, str) else len(prompt)
    elif kwargs.get("prompt_embeds") is not None:
        batch = kwargs["prompt_embeds"].shape[0]
    else:
        raise ConfigError("give the pipeline a prompt (or prompt_embeds) so the batch size is known")
    batch *= int(kwargs.get("num_images_per_prompt") or 1)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    default = int(getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size) * factor
    height, width = int(kwargs.get("height") or default), int(kwargs.get("width") or default)
    return (batch, int(pipe.unet.config.in_channels), height // factor, width // factor)


@register_watermarker("tree_ring")
class TreeRing(ScoreWatermarker):
    """Tree-Ring: key pattern in the Fourier transform of the initial noise, DDIM-inversion detection."""

    generation_time: ClassVar[bool] = True

    def __init__(
        self,
        *,
        pattern: str = "ring",
        channel: int = -1,
        radius: Optional[int] = None,
        inversion_steps: int = 10,
        pipeline: Any = "tiny",
        calibration: Any = "auto",
    ):
        if pattern not in PATTERNS:
            raise ConfigError(f"unknown Tree-Ring pattern '{pattern}' (choose from {', '.join(PATTERNS)})")
        if radius is not None and (not isinstance(radius, int) or radius < 1):
            raise ConfigError(f"radius must be a positive integer, got {radius!r}")
        if not isinstance(inversion_steps, int) or inversion_steps < 1:
            raise ConfigError(f"inversion_steps must be a positive integer, got {inversion_steps!r}")
        self.pattern = pattern
        self.channel = channel
        self.radius = radius
        self.inversion_steps = inversion_steps
        self._pipeline_spec = pipeline
        self._pipe = None
        self._calibration_spec = calibration

    def config(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "channel": self.channel, "radius": self.radius,
                "inversion_steps": self.inversion_steps}

    # -- the pipeline used for detection ------------------------------------------------
    @property
    def pipe(self):
        if self._pipe is None:
            if isinstance(self._pipeline_spec, (str, bytes)) or hasattr(self._pipeline_spec, "__fspath__"):
                from ..diffusion import load_pipeline

                self._pipe = load_pipeline(self._pipeline_spec)
            else:
                self._pipe = self._pipeline_spec
        return self._pipe

    @property
    def model_name(self) -> str:
        """'tiny' for the shipped pipeline (by name or loaded from its folder), else its path or class."""
        from pathlib import Path

        from ..diffusion import tiny_path

        spec = self._pipeline_spec
        source = str(spec) if isinstance(spec, (str, Path)) else getattr(spec, "name_or_path", None)
        if not source:
            return type(spec).__name__
        if source != "tiny" and Path(source).exists() and Path(source).resolve() == tiny_path().resolve():
            return "tiny"
        return source

    # -- marking ------------------------------------------------------------------------------
    def _radius_for(self, height: int, width: int) -> int:
        # the reference uses r = 10 on SD's 64 x 64 latents: keep the same fraction by default
        radius = self.radius if self.radius is not None else max(2, round(10 * min(height, width) / 64))
        if radius >= min(height, width) // 2:
            raise ConfigError(f"radius {radius} does not fit a {height}x{width} latent (must be < {min(height, width) // 2})")
        return radius

    def key_parts(self, key: Key, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask, pattern) for a latent of this size: the key region and the key's spectrum."""
        self.check_key(key)
        if height % 2 or width % 2:
            raise ConfigError(f"Tree-Ring needs even latent sizes, got {height}x{width}")
        radius = self._radius_for(height, width)
        return key_region(height, width, radius), make_pattern(self.pattern, key, height, width, radius)

    def watermark_latents(self, latents: torch.Tensor, key: Key) -> torch.Tensor:
        """Write the key into initial latents (B, C, h, w); returns new latents of the same dtype."""
        if latents.dim() != 4:
            raise ConfigError(f"expected latents (B, C, h, w), got {tuple(latents.shape)}")
        height, width = latents.shape[-2:]
        mask, pattern = self.key_parts(key, height, width)
        out = latents.detach().to(torch.float64).clone()
        channel = out[:, self.channel]
        spectrum = torch.fft.fftshift(torch.fft.fft2(channel), dim=(-2, -1))
        spectrum = torch.where(mask, pattern.to(spectrum.dtype), spectrum)
        marked = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)))
        # Hermitian pattern + Hermitian spectrum: the imaginary part is rounding noise only
        out[:, self.channel] = marked.real
        return out.to(latents.dtype)

    def prepare_call(self, pipe, key: Key, args: tuple, kwargs: dict) -> dict:
        """Draw the initial noise exactly as the pipeline would (same generator(s), same
        shape), write the key into it, and pass it as ``latents=``."""
        latents = kwargs.get("latents")
        if latents is None:
            from diffusers.utils.torch_utils import randn_tensor

            latents = randn_tensor(
                _latent_shape(pipe, args, kwargs), generator=kwargs.get("generator"),
                device=getattr(pipe, "_execution_device", None) or pipe.unet.device, dtype=pipe.unet.dtype,
            )
        kwargs["latents"] = self.watermark_latents(latents, key)
        return kwargs

    # -- detection --------------------------------------------------------------------------
    def extract(self, images) -> torch.Tensor:
        """DDIM-inverted initial latents (B, C, h, w) of the images."""
        from ..diffusion import invert

        image_list, _ = as_image_list(images)
        return torch.cat([invert(self.pipe, [img], num_steps=self.inversion_steps) for img in image_list])

    def analytic_log_p(self, latents: torch.Tensor, key: Key):
        """Log analytic p-values of inverted latents against the key; score = -log10 p, extra: distance eta."""
        height, width = latents.shape[-2:]
        mask, pattern = self.key_parts(key, height, width)
        region = mask & independent_half(height, width)
        channel = latents[:, self.channel].to(torch.float64)
        spectrum = torch.fft.fftshift(torch.fft.fft2(channel), dim=(-2, -1))
        # per-image variance of the latent channel -> variance of each real Fourier component
        sigma2 = channel.var(dim=(-2, -1)) * height * width / 2.0
        y = spectrum[:, region]
        k = pattern[region]
        eta = ((y - k[None]).abs() ** 2).sum(-1) / sigma2
        noncentrality = (k.abs() ** 2).sum() / sigma2
        dof = 2 * int(region.sum())
        log_p = np.asarray(stats.log_noncentral_chi2_p_value(eta.numpy(), dof, noncentrality.numpy()), dtype=np.float64)
        return log_p, -log_p / np.log(10), {"distance": eta.numpy()}
