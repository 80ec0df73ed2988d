"""Tree-Ring (Wen et al., 2023): a key pattern in the Fourier transform of the initial noise.

Marking: the centred 2-D FFT of one latent channel of the initial noise z_T is
overwritten inside a disc of radius r (the key region) by a key pattern; the
result goes back through the inverse FFT and is handed to the pipeline with
``latents=``. Detection: VAE-encode, DDIM-invert (empty prompt, guidance 1) to
estimate z_T, and compare its Fourier coefficients in the key region with the key.

Three differences from the reference code, all for honest statistics:
- Patterns are **Hermitian-symmetric** (K(-f) = conj K(f)), so the marked latent
  is real without discarding an imaginary part; the reference code takes
  ``.real`` after writing a non-symmetric pattern, which silently halves it.
- Only the **independent** coefficients are tested (one of each conjugate pair,
  the DC term excluded); counting both halves of each pair doubles the evidence.
- The p-value of the ``rand`` and ``ring`` patterns comes from the **randomness of
  the key**, not from a model of the image. Their key values are Gaussian (the
  spectrum of key-seeded white noise), so for *any* fixed unwatermarked latent Y
  the correlation T = Re sum conj(K) Y over the key region is exactly Gaussian
  over keys, with variance (hw/2) sum |Y|^2 (``rand``: every coefficient its own
  key value) or (hw/2) sum_r S_r^2 (``ring``: one real value per ring r, S_r the
  sum of Re Y over the ring). z = T / sd is N(0, 1) whatever the image, the
  inversion error or the pipeline: no white-noise assumption, which is what made
  the reference's chi-square p-values badly anti-conservative (on the tiny
  pipeline a clean generation scored p = 1e-8). The price is that a pattern's
  evidence is capped by its key entropy: ``ring`` has only r random values, so
  z <= sqrt(chi2_r) (about sqrt(r)) and its p-value rarely goes below 1e-2 on a
  32 x 32 latent; ``rand`` (2|M| values) is the default for that reason.
  ``zeros`` carries no key randomness at all: its energy test keeps the
  white-latent model (central chi-square, variance from the latent itself) and
  needs the empirical calibration.
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
    can_embed: ClassVar[bool] = False  # the mark is in the initial noise: nothing to add to a given image

    def __init__(
        self,
        *,
        pattern: str = "rand",
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
        from ..diffusion import pipeline_label

        return pipeline_label(self._pipeline_spec)

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
        """Log analytic p-values of inverted latents against the key; score = -log10 p.

        ``rand``/``ring``: the key-randomisation z-test (module docstring), extra "z";
        ``zeros``: the energy of the key region, central chi-square, extra "distance"."""
        height, width = latents.shape[-2:]
        mask, pattern = self.key_parts(key, height, width)
        region = mask & independent_half(height, width)
        channel = latents[:, self.channel].to(torch.float64)
        y = torch.fft.fftshift(torch.fft.fft2(channel), dim=(-2, -1))[:, region]
        if self.pattern == "zeros":
            # per-image variance of the latent channel -> variance of each real Fourier component
            sigma2 = channel.var(dim=(-2, -1)) * height * width / 2.0
            eta = (y.abs() ** 2).sum(-1) / sigma2
            log_p = np.asarray(stats.log_noncentral_chi2_p_value(eta.numpy(), 2 * int(region.sum()), np.zeros(len(eta))),
                               dtype=np.float64)
            return log_p, -log_p / np.log(10), {"distance": eta.numpy()}
        k = pattern[region]
        correlation = (torch.conj(k)[None] * y).real.sum(-1)
        if self.pattern == "rand":
            spread = (y.abs() ** 2).sum(-1)
        else:  # ring: the coefficients of ring r share the one key value k_r (real)
            fy, fx = _frequency_grid(height, width)
            rings = torch.sqrt((fy**2 + fx**2).double()).round().long()[region]
            spread = sum(y.real[:, rings == r].sum(-1) ** 2 for r in torch.unique(rings).tolist())
        # each real key value is N(0, hw/2): the variance of one real part of a white-noise DFT
        sd = torch.sqrt(spread * height * width / 2.0)
        z = torch.where(sd > 0, correlation / sd.clamp_min(1e-300), torch.zeros_like(sd)).numpy()
        log_p = stats.log_normal_sf(z)
        return log_p, -log_p / np.log(10), {"z": z}
