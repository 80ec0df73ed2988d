"""Tree-Ring (Wen et al., 2023): a key pattern in the Fourier transform of the initial noise.

Marking: the centred 2-D FFT of the latent channels of the initial noise z_T is
overwritten inside a disc of radius r (the key region) by a key pattern, one per
channel; the result goes back through the inverse FFT and is handed to the pipeline
with ``latents=``. Detection: VAE-encode, DDIM-invert (empty prompt, guidance 1) to
estimate z_T, and compare its Fourier coefficients in the key region with the key.

Defaults differ from the reference (one channel, r = 10 on SD's 64 x 64 latents)
because power is evidence: every channel, r = a quarter of the latent's shorter side
(8 on the tiny pipeline's 32 x 32), i.e. 400 independent real key values instead of 78.
On the tiny pipeline, whose DDIM inversion recovers the noise to a cosine of about
0.6, that took the median z of clean generations from 3.8 to 12.8 (docs/tree_ring.md).
The price: for one key, a fifth of the initial noise is fixed, so a key's generations
share more of their coarse layout than with the reference setting.

Geometric search (``search=True``): a rotated or cropped-and-resized image is read by
undoing candidate rotations and zooms of the inverted latent (cheap: no inversion),
and, for the best rotation, of the image itself before a second inversion (measured:
the latent-level undo recovers about half the z of the image-level one after a 15
degree rotation). The search is counted in the p-value: each candidate's z is exactly
N(0, 1) under H0 (a fixed, key-independent transform of the image), so with J
candidates besides the identity, p = min(1, 2 p_identity, 2 J p(max z)) by Bonferroni
(the identity keeps nearly full power; an untransformed mark loses a factor 2).

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

from typing import Any, Optional

import numpy as np
import torch

from .. import stats
from ..errors import ConfigError
from ..keys import Key
from ..registry import register_watermarker
from ..types import DetectionResult
from .initial_noise import (SEARCH_FINE_ANGLES, SEARCH_SCAN_STEPS, SEARCH_STAGE_TWO_Z, InitialNoiseWatermarker,
                            _inside, _search_candidates, _undo, scan_angles)

# A 2-step reading of a rotated mark below this z is not worth the full read: the 10-step
# reading gains at most about 1.6x on the 2-step one (measured on 24 rotated generations),
# which keeps it below z = 4.4, what p < 1e-3 needs after the search's correction
SEARCH_SCAN_GIVE_UP_Z = 2.5

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


def make_pattern(kind: str, key: Key, height: int, width: int, radius: int, stream: str = "tree_ring/pattern") -> torch.Tensor:
    """The key's complex pattern (centred spectrum, Hermitian) for one latent channel.

    rand: the spectrum of a key-seeded Gaussian noise field (so the marked latent
    keeps white-noise statistics); zeros: all zeros; ring: constant along rings
    of integer radius, the value of ring k taken from the key-seeded spectrum
    (the reference code's 'ring' pattern, made Hermitian)."""
    if kind not in PATTERNS:
        raise ConfigError(f"unknown Tree-Ring pattern '{kind}' (choose from {', '.join(PATTERNS)})")
    noise = torch.randn(height, width, generator=key.torch_generator(stream), dtype=torch.float64)
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


@register_watermarker("tree_ring")
class TreeRing(InitialNoiseWatermarker):
    """Tree-Ring: key pattern in the Fourier transform of the initial noise, DDIM-inversion detection."""

    def __init__(
        self,
        *,
        pattern: str = "rand",
        channel: Any = "all",
        radius: Optional[int] = None,
        inversion_steps: int = 10,
        search: Optional[bool] = None,
        pipeline: Any = "tiny",
        calibration: Any = "auto",
    ):
        if pattern not in PATTERNS:
            raise ConfigError(f"unknown Tree-Ring pattern '{pattern}' (choose from {', '.join(PATTERNS)})")
        if channel != "all" and (isinstance(channel, bool) or not isinstance(channel, int)):
            raise ConfigError(f"channel must be 'all' or a channel index, got {channel!r}")
        if radius is not None and (not isinstance(radius, int) or radius < 1):
            raise ConfigError(f"radius must be a positive integer, got {radius!r}")
        if search is None:
            search = pattern != "zeros"
        if pattern == "zeros" and search:
            raise ConfigError("the geometric search needs a key-randomised test ('rand' or 'ring' pattern), "
                              "not 'zeros' (its energy test has no exact null under a transform)")
        self.pattern = pattern
        self.channel = channel
        self.radius = radius
        super().__init__(pipeline=pipeline, inversion_steps=inversion_steps, calibration=calibration)
        self.search = bool(search)

    def config(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "channel": self.channel, "radius": self.radius,
                "inversion_steps": self.inversion_steps, "search": self.search}

    # -- marking ------------------------------------------------------------------------------
    def _radius_for(self, height: int, width: int) -> int:
        if self.radius is not None:
            radius = self.radius
        elif self.channel == "all":
            radius = max(2, round(min(height, width) / 4))
        else:  # the reference's r = 10 on SD's 64 x 64 latents, at the same fraction
            radius = max(2, round(10 * min(height, width) / 64))
        if radius >= min(height, width) // 2:
            raise ConfigError(f"radius {radius} does not fit a {height}x{width} latent (must be < {min(height, width) // 2})")
        return radius

    def _channels(self, num_channels: int) -> list[int]:
        if self.channel == "all":
            return list(range(num_channels))
        if not -num_channels <= self.channel < num_channels:
            raise ConfigError(f"channel {self.channel} does not exist in a {num_channels}-channel latent")
        return [self.channel % num_channels]

    def key_parts(self, key: Key, height: int, width: int, num_channels: int = 4) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(mask, {channel: pattern}) for a latent of this size: the key region and the key's
        spectrum in each marked channel (one channel: the reference's single pattern)."""
        self.check_key(key)
        if height % 2 or width % 2:
            raise ConfigError(f"Tree-Ring needs even latent sizes, got {height}x{width}")
        radius = self._radius_for(height, width)
        channels = self._channels(num_channels)
        streams = {c: "tree_ring/pattern" if self.channel != "all" else f"tree_ring/pattern/{c}" for c in channels}
        return key_region(height, width, radius), {
            c: make_pattern(self.pattern, key, height, width, radius, stream) for c, stream in streams.items()}

    def watermark_latents(self, latents: torch.Tensor, key: Key) -> torch.Tensor:
        """Write the key into initial latents (B, C, h, w); returns new latents of the same dtype."""
        if latents.dim() != 4:
            raise ConfigError(f"expected latents (B, C, h, w), got {tuple(latents.shape)}")
        height, width = latents.shape[-2:]
        mask, patterns = self.key_parts(key, height, width, latents.shape[1])
        out = latents.detach().to(torch.float64).clone()
        for c, pattern in patterns.items():
            spectrum = torch.fft.fftshift(torch.fft.fft2(out[:, c]), dim=(-2, -1))
            spectrum = torch.where(mask, pattern.to(spectrum.dtype), spectrum)
            # Hermitian pattern + Hermitian spectrum: the imaginary part is rounding noise only
            out[:, c] = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
        return out.to(latents.dtype)

    # -- detection --------------------------------------------------------------------------
    def _detect(self, images, key: Key) -> list[DetectionResult]:
        """As ``results_from_signal(extract(images))``, plus the image-level stage of the
        geometric search: where a latent-level candidate reads better than the identity
        and its z passes ``SEARCH_STAGE_TWO_Z``, the best candidate is undone on the image
        and inverted again (``_image_undo``), which reads a rotated or zoomed mark about twice
        as well as the latent-level undo, at the angle a short scan of the fine grid around it
        finds best (``scan_angles``: at most 5 two-step inversions, then one full one unless
        the scan read nothing). The p-value formula is the same either way (module
        docstring): this only adds power."""
        latents = self.extract(images)
        if not self.search:
            return self.results_from_signal(latents, key)
        stage_two: dict[int, list[torch.Tensor]] = {}
        height, width = latents.shape[-2:]
        prepared = self._prepare(latents)
        _, patterns = self.key_parts(key, height, width, latents.shape[1])
        keyed = torch.stack([patterns[c][prepared["region"]] for c in sorted(patterns)])

        def z_of(undone):  # one z per latent of the batch
            return self._z_of(self._reading(undone, prepared["region"]), keyed, height * width)

        _, _, extra, ranked = self._scored(latents, key, prepared=prepared)
        for i, image in enumerate(images):
            if extra["search_z"][i] <= max(SEARCH_STAGE_TWO_Z, extra["z"][i]):
                continue  # no candidate reads clearly better than the untransformed image
            # The latent-level reading locates a rotation only to a few degrees, the image-level
            # one is sharp (2 degrees off can lose it all, with side lobes further out): scan the
            # fine angles around the best coarse candidate with a cheap short inversion, then
            # read the best of them properly. Only that last read enters the p-value.
            angle, zoom = ranked[i][0]
            if zoom == 1.0:
                angle, scanned = scan_angles(angle, lambda angles: z_of(self._rotations_undone(
                    image, (height, width), angles, steps=SEARCH_SCAN_STEPS)), give_up_below=SEARCH_SCAN_GIVE_UP_Z)
                if max(scanned.values(), default=-np.inf) < SEARCH_SCAN_GIVE_UP_Z:
                    continue
            stage_two[i] = [self._image_undo(image, (height, width), angle, zoom)]
        return self.results_from_log_p(*self._scored(latents, key, stage_two, prepared)[:3])

    def _reading(self, latents: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The key-independent part of the test: the key region's coefficients Y (B, C, R) of
        the marked channels, and the variance factor of T = Re sum conj(K) Y over keys:
        sum |Y|^2 (``rand``: every coefficient its own key value) or sum_r (sum Re Y over ring
        r)^2 (``ring``: one real key value per ring)."""
        height, width = latents.shape[-2:]
        channels = self._channels(latents.shape[1])
        spectra = torch.fft.fftshift(torch.fft.fft2(latents[:, channels].to(torch.float64)), dim=(-2, -1))
        y = spectra[:, :, region]
        if self.pattern == "ring":
            fy, fx = _frequency_grid(height, width)
            rings = torch.sqrt((fy**2 + fx**2).double()).round().long()[region]
            energy = sum((y.real[:, :, rings == r].sum(-1) ** 2).sum(-1) for r in torch.unique(rings).tolist())
        else:
            energy = (y.abs() ** 2).sum(dim=(1, 2))
        return y, energy

    @staticmethod
    def _z_of(reading: tuple[torch.Tensor, torch.Tensor], keyed: torch.Tensor, size: int) -> np.ndarray:
        """z of one reading against the key's region values ``keyed`` (C, R); each real key
        value is N(0, hw/2), the variance of one real part of a white-noise DFT."""
        y, energy = reading
        correlation = (torch.conj(keyed)[None] * y).real.sum(dim=(1, 2))
        sd = torch.sqrt(energy * size / 2.0)
        return torch.where(sd > 0, correlation / sd.clamp_min(1e-300), torch.zeros_like(sd)).numpy()

    def _prepare(self, latents: torch.Tensor) -> dict:
        """Every key-independent reading of inverted latents (the identity and each search
        candidate): computed once, then tested against any number of keys (``identify``)."""
        height, width = latents.shape[-2:]
        radius = self._radius_for(height, width)
        region = key_region(height, width, radius) & independent_half(height, width)
        prepared = {"region": region, "shape": tuple(latents.shape[1:]), "identity": self._reading(latents, region)}
        if self.search and self.pattern != "zeros":
            prepared["candidates"] = [self._reading(_undo(latents, a, s) * _inside(height, width, a, s), region)
                                      for a, s in _search_candidates()]
        return prepared

    def _identify(self, images, keys: list[Key], *, correction: str = "sidak") -> list[DetectionResult]:
        """The best of K keys, corrected for K looks; the inversion and the search's readings
        are computed once for all keys (the image-level search stage is ``detect``'s only)."""
        from .base import _best_of

        latents = self.extract(images)
        prepared = self._prepare(latents) if self.pattern != "zeros" else None
        per_key = [self.results_from_log_p(*self._scored(latents, key, prepared=prepared)[:3]) for key in keys]
        return [_best_of(method=self.name, candidates=[r[i] for r in per_key], correction=correction)
                for i in range(len(per_key[0]))]

    def analytic_log_p(self, latents: torch.Tensor, key: Key, stage_two: Optional[dict[int, list[torch.Tensor]]] = None):
        """Log analytic p-values of inverted latents against the key; score = -log10 p.

        ``rand``/``ring``: the key-randomisation z-test (module docstring), extra "z" (and,
        with the search, the best candidate's "search_z", "search_angle", "search_zoom");
        ``stage_two``: image index -> latents of its image-level undos (``detect``);
        ``zeros``: the energy of the key region, central chi-square, extra "distance"."""
        return self._scored(latents, key, stage_two)[:3]

    def _scored(self, latents: torch.Tensor, key: Key, stage_two: Optional[dict[int, list[torch.Tensor]]] = None,
                prepared: Optional[dict] = None):
        """analytic_log_p's triple and, per image, the search candidates best first."""
        height, width = latents.shape[-2:]
        mask, patterns = self.key_parts(key, height, width, latents.shape[1])
        if self.pattern == "zeros":
            return (*self._zeros_log_p(latents, mask & independent_half(height, width), height, width), None)
        prepared = prepared or self._prepare(latents)
        region = prepared["region"]
        keyed = torch.stack([patterns[c][region] for c in sorted(patterns)])
        z = self._z_of(prepared["identity"], keyed, height * width)
        log_p = stats.log_normal_sf(z)
        if not self.search:
            return log_p, -log_p / np.log(10), {"z": z}, None
        candidates = _search_candidates()
        z_search = np.stack([self._z_of(reading, keyed, height * width) for reading in prepared["candidates"]], axis=1)
        best = z_search.argmax(1)
        best_z = z_search[np.arange(len(best)), best]
        for i, undone in (stage_two or {}).items():
            for extra_latents in undone:
                best_z[i] = max(best_z[i], float(self._z_of(self._reading(extra_latents, region), keyed, height * width)[0]))
        # Bonferroni over the identity (half the level) and the search candidates (the coarse
        # latent-level undos and the fine image-level ones), whichever of them were computed
        family = len(candidates) + len(_search_candidates(SEARCH_FINE_ANGLES))
        log_p = np.minimum(np.log(2) + log_p, np.log(2 * family) + stats.log_normal_sf(best_z))
        log_p = np.minimum(log_p, 0.0)
        angles = np.array([candidates[b][0] for b in best])
        zooms = np.array([candidates[b][1] for b in best])
        # the candidates best first, for ``detect``
        ranked = [[candidates[j] for j in np.argsort(-row)] for row in z_search]
        return log_p, -log_p / np.log(10), {"z": z, "search_z": best_z, "search_angle": angles, "search_zoom": zooms}, ranked

    def _zeros_log_p(self, latents, region, height, width):
        # per-image variance of each marked channel -> variance of each real Fourier component
        eta = torch.zeros(len(latents), dtype=torch.float64)
        channels = self._channels(latents.shape[1])
        for c in channels:
            channel = latents[:, c].to(torch.float64)
            sigma2 = channel.var(dim=(-2, -1)) * height * width / 2.0
            y = torch.fft.fftshift(torch.fft.fft2(channel), dim=(-2, -1))[:, region]
            eta += (y.abs() ** 2).sum(-1) / sigma2
        dof = 2 * int(region.sum()) * len(channels)
        log_p = np.asarray(stats.log_noncentral_chi2_p_value(eta.numpy(), dof, np.zeros(len(eta))), dtype=np.float64)
        return log_p, -log_p / np.log(10), {"distance": eta.numpy()}
