"""A periodic low-frequency carrier: the message as the signs of sinusoids in one luminance tile.

Post-hoc scheme ``periodic``, in the line of Kutter's self-referencing periodic marks (1999)
and of spread spectrum: a ``PERIOD`` x ``PERIOD`` pixel tile, the sum of the tile's lowest
2-D frequencies with signs drawn from the bits, is repeated over the whole image in
luminance (the same change in R, G and B) at the target PSNR. Detection folds the image onto
one tile (the mean over all tiles: the mark adds up, the photo averages out), projects the fold
onto the carrier frequencies, and reads each bit as the sign of its coefficient's z-value
(the coefficient over its standard error across tiles).

Why this shape (measured, docs/periodic.md): a learned mark trained on a CPU budget sat at
1/8 cycle per pixel and above, the band JPEG quantises first and a half-size resize folds away,
while sinusoids at most 0.2 cycles per pixel along each axis keep their sign through JPEG 50
and a 0.5 resize on unseen photos. Low frequencies are where the photo itself is strongest, so
each carrier's amplitude falls as 1/frequency (the photo's spectrum falls about as fast).

The reading finds the mark again after the image is cropped, resized or rotated:
- *shift*: 16 of the 64 carrier coefficients are a fixed synchronisation pattern, the same for
  every key; a cyclic shift of the tile turns each coefficient's phase, so the shift (to a
  quarter pixel) is where the synchronisation coefficients agree best with their pattern;
- *scale and rotation*: the carrier puts narrow peaks in the image's spectrum on a lattice;
  ``lattice_candidates`` matches the known carrier frequencies against the spectrum's peaks
  over scales 0.5-2 and rotations up to 45 degrees, and the image is read again
  resampled at the best matches; the reading whose synchronisation agrees best wins.
Nothing of this depends on the key, so every key's bits come from one reading of the image.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import LUMA
from ..errors import ConfigError
from ..models.resampling import resample
from ..registry import register_watermarker
from .base import BitWatermarker, break_ties

READER_VERSION = 1  # raise it when the reading changes in a way the constants below do not show
PERIOD = 20  # pixels: 20 keeps every carrier off JPEG's 8 x 8 block harmonics (multiples of 1/8)
SYNC_DOFS = 16
SYNC_SEED = 0x5EED
SHIFT_STEP = 0.25  # pixels between the shifts tried
CANDIDATES = 3  # rescaled / rotated readings tried besides the image's own
# Per-tile power floor in fold_coefficients: about the mark's own power per coefficient at
# 40 dB (2 x 1e-4 / 32 = 6e-6). Without weights (every tile alike) 40 dB marks on 16 unseen
# photos read at bit accuracy 0.977 with no attack, 0.964 after JPEG 50 and 0.901 after a
# crop resized back; with these weights 0.997, 0.975 and 0.944 (docs/periodic.md).
TILE_POWER_FLOOR = 1e-5
# One 8-bit level of a carrier frequency gives a coefficient of about 4e-3; these are far below
FLAT_COEFFICIENT = 1e-9
MIN_STANDARD_ERROR = 1e-7  # a synthetic image with nothing but the mark would read infinite z otherwise
# A rescaled or rotated reading is refined by the synchronisation itself (the spectrum's
# peaks place the scale to about half a percent, and half a percent drifts a 20 px tile by
# a quarter period across a 512 px image): these relative periods, then these angles.
REFINE_PERIODS = (0.996, 0.998, 1.002, 1.004)
REFINE_ANGLES = (-0.3, -0.15, 0.15, 0.3)


@lru_cache(maxsize=4)
def carrier(period: int, num_bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frequencies (F, 2) in cycles per tile as (ky, kx), amplitude weight per coefficient (2F,),
    indices of the synchronisation coefficients, their signs) for ``num_bits`` + ``SYNC_DOFS``
    coefficients: cos and sin of the F lowest frequencies of a half plane (lowest by the larger
    of |ky|, |kx|, what a resize along either axis keeps, then by radius)."""
    count = -(-(num_bits + SYNC_DOFS) // 2)
    reach = int(math.ceil(math.sqrt(count))) + 1
    half_plane = [(ky, kx) for ky in range(-reach, reach + 1) for kx in range(0, reach + 1)
                  if kx > 0 or ky > 0]
    half_plane.sort(key=lambda k: (max(abs(k[0]), k[1]), math.hypot(*k), math.atan2(k[0], k[1])))
    freqs = torch.tensor(half_plane[:count], dtype=torch.float64)
    if freqs.abs().max() * 2 >= period:
        raise ConfigError(f"{num_bits} bits do not fit below half the {period} px tile's sampling rate")
    weight = freqs.norm(dim=1).repeat_interleave(2).reciprocal()
    rng = np.random.default_rng(SYNC_SEED)
    # whole frequencies (cos and sin): a shift turns each frequency's pair, so a message
    # coefficient sharing a frequency with the synchronisation would leak into its score at
    # wrong shifts, and the shift found would depend on the key (measured: it did)
    sync_freqs = np.sort(rng.choice(count, SYNC_DOFS // 2, replace=False))
    sync = torch.from_numpy(np.stack([2 * sync_freqs, 2 * sync_freqs + 1], 1).flatten())
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], SYNC_DOFS))
    return freqs, weight, sync, signs


def carrier_tile(period: int, signs: torch.Tensor, num_bits: int) -> torch.Tensor:
    """The (period, period) tile whose coefficients have these signs (cos, sin per frequency), RMS 1."""
    freqs, weight, _, _ = carrier(period, num_bits)
    arg = tile_phases(freqs, period)
    basis = torch.stack([arg.cos(), arg.sin()], 1).reshape(-1, period, period)
    tile = torch.einsum("d,dij->ij", signs[: len(basis)].double() * weight, basis)
    return tile / tile.pow(2).mean().sqrt()


def tile_phases(freqs: torch.Tensor, period: int) -> torch.Tensor:
    """2 pi k.x / period for every frequency k and tile pixel x: (F, period, period)."""
    grid = torch.arange(period, dtype=torch.float64)
    return 2 * math.pi * (freqs[:, 0, None, None] * grid[:, None] + freqs[:, 1, None, None] * grid[None, :]) / period


def luminance(image: torch.Tensor) -> torch.Tensor:
    if image.shape[0] == 1:
        return image[0]
    return sum(w * c for w, c in zip(LUMA, image[:3]))


@register_watermarker("periodic")
class Periodic(BitWatermarker):
    """A periodic low-frequency luminance carrier, read through crops, resizes and rotations."""

    min_side: ClassVar[int] = 3 * PERIOD
    # blank images read the same coins (break_ties): a payload copied from them must not
    # claim every such image (measured before the mask: 3 all-white corpus crops read one
    # message, which the in-sample majority key then matched at 46 of 48 bits)
    masks_given_payload: ClassVar[bool] = True

    def __init__(self, *, num_bits: int = 48, psnr: float = 40.0, calibration: Any = "auto"):
        super().__init__(num_bits=num_bits, calibration=calibration)
        if not 20.0 <= float(psnr) <= 60.0:
            raise ConfigError(f"psnr must be between 20 and 60 dB, got {psnr!r}")
        self.psnr = float(psnr)
        carrier(PERIOD, num_bits)  # refuses a message that does not fit

    # -- marking ------------------------------------------------------------------------------
    def coefficient_signs(self, bits: np.ndarray) -> torch.Tensor:
        """+-1 per carrier coefficient: the synchronisation pattern at its places, the bits elsewhere."""
        freqs, _, sync, sync_signs = carrier(PERIOD, self.num_bits)
        signs = torch.zeros(2 * len(freqs), dtype=torch.float64)
        signs[sync] = sync_signs
        rest = torch.ones(len(signs), dtype=torch.bool)
        rest[sync] = False
        signs[torch.nonzero(rest).flatten()[: self.num_bits]] = torch.as_tensor(bits, dtype=torch.float64) * 2 - 1
        return signs

    def _embed_bits(self, images: list[torch.Tensor], bits: np.ndarray) -> list[torch.Tensor]:
        tile = carrier_tile(PERIOD, self.coefficient_signs(bits), self.num_bits).float()
        rms = 10 ** (-self.psnr / 20)
        out = []
        for img in images:
            height, width = img.shape[-2:]
            reps = (-(-height // PERIOD), -(-width // PERIOD))
            residual = tile.repeat(*reps)[:height, :width] * rms
            out.append((img.float() + residual).clamp(0, 1).to(img.dtype))
        return out

    # -- reading ------------------------------------------------------------------------------
    def decode_bits(self, images: list[torch.Tensor]) -> np.ndarray:
        rows = []
        for img in images:
            z = self.reading(img)["z"]
            bits = (z > 0).numpy().astype(np.uint8)
            ties = (z == 0).numpy()
            rows.append(break_ties(bits, ties, img) if ties.any() else bits)
        return np.stack(rows) if rows else np.zeros((0, self.num_bits), dtype=np.uint8)

    @torch.no_grad()
    def reading(self, image: torch.Tensor) -> dict[str, Any]:
        """The best of the image's own reading and its rescaled / rotated ones: the message
        z-values ``z`` (num_bits,), the synchronisation z ``sync``, the ``period`` and ``angle``
        (degrees) the image was read at and the ``shift`` found."""
        y = luminance(image.double())
        own = self._read(y, float(PERIOD), 0.0)
        others = [self._read(y, period, angle) for period, angle in lattice_candidates(y, PERIOD, self.num_bits, CANDIDATES)
                  if abs(period / PERIOD - 1) >= 0.002 or abs(angle) >= 0.1]
        best = max(others, key=lambda r: r["sync"], default=own)
        if best["sync"] <= own["sync"]:
            return own
        best = self._refined(y, best)
        return best if best["sync"] > own["sync"] else own

    def _refined(self, y: torch.Tensor, reading: dict[str, Any]) -> dict[str, Any]:
        """The reading at the period, then the angle, near it whose synchronisation agrees best."""
        for factors, offsets in ((REFINE_PERIODS, (0.0,)), ((1.0,), REFINE_ANGLES)):
            start = reading  # the angles are tried at the period just refined
            for period, angle in [(start["period"] * f, start["angle"] + a) for f in factors for a in offsets]:
                other = self._read(y, period, angle)
                if other["sync"] > reading["sync"]:
                    reading = other
        return reading

    def _read(self, y: torch.Tensor, period: float, angle: float) -> dict[str, Any]:
        view = resample(y, PERIOD / period, angle, PERIOD) if (period != PERIOD or angle) else y
        freqs, _, sync, sync_signs = carrier(PERIOD, self.num_bits)
        mean, se = fold_coefficients(view, freqs)
        shifts, phase = shift_phases(self.num_bits)
        # rotated coefficients (a - i b) e^{-i phi} for every shift: real part -> cos, -imag -> sin
        # a coefficient far below what one 8-bit level could make is rounding, the same on
        # every flat image: read as exact ties (coins, see break_ties), not as a message
        mean = torch.where(mean.abs() < FLAT_COEFFICIENT, torch.zeros_like(mean), mean)
        turned = mean[None, :] * phase  # (shifts, F) complex
        values = torch.stack([turned.real, -turned.imag], -1).reshape(len(shifts), -1)
        values = values / se.clamp_min(MIN_STANDARD_ERROR).repeat_interleave(2)
        sync_z = values[:, sync] @ sync_signs / math.sqrt(len(sync))
        index = int(sync_z.argmax())
        rest = torch.ones(values.shape[1], dtype=torch.bool)
        rest[sync] = False
        z = values[index][rest][: self.num_bits].float()
        return {"z": z, "sync": float(sync_z[index]), "period": period, "angle": angle,
                "shift": tuple(float(v) for v in shifts[index])}

    def extractor_digest(self) -> str:
        """12 hex digits of sha256 over what decides the reading (the carrier and the search):
        a shipped calibration records it and is refused once the reader changes."""
        import hashlib

        reader = (READER_VERSION, PERIOD, SYNC_DOFS, SYNC_SEED, SHIFT_STEP, LUMA, CANDIDATES, TILE_POWER_FLOOR,
                  FLAT_COEFFICIENT, MIN_STANDARD_ERROR, REFINE_PERIODS, REFINE_ANGLES, self.num_bits)
        return hashlib.sha256(repr(reader).encode()).hexdigest()[:12]


def fold_coefficients(y: torch.Tensor, freqs: torch.Tensor, floor: float = TILE_POWER_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted mean over all whole tiles of each carrier frequency's complex coefficient
    a - i b ((F,) complex), and its standard error ((F,) real, cos and sin pooled, since a
    shift mixes them).

    Each tile weighs by the inverse of its own power at the carrier frequencies (plus
    ``floor``): the mark is the same in every tile while the photo is not, so a tile of sky
    tells more than a tile of foliage. The floor keeps tiles where the photo is flatter than
    the mark itself from dominating (after JPEG they may have lost the mark with the rest)."""
    p = PERIOD
    rows, cols = y.shape[-2] // p, y.shape[-1] // p
    tiles = y[: rows * p, : cols * p].reshape(rows, p, cols, p).permute(0, 2, 1, 3).reshape(rows * cols, p * p)
    arg = tile_phases(freqs, p)
    basis = torch.polar(torch.ones_like(arg), -arg).reshape(len(freqs), -1)  # e^{-i k.x}: a - i b
    coeffs = (tiles.to(basis.dtype) @ basis.T) * (2 / (p * p))
    weight = 1.0 / (coeffs.abs().pow(2).mean(1) + floor)
    weight = weight / weight.sum()
    mean = (weight[:, None] * coeffs).sum(0)
    n_eff = 1.0 / weight.pow(2).sum()
    spread = (weight[:, None] * (coeffs - mean).abs().pow(2)).sum(0) * n_eff / max(float(n_eff) - 1, 1.0) / 2
    return mean, (spread / n_eff).sqrt()


@lru_cache(maxsize=4)
def shift_phases(num_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(shifts (S, 2) in pixels, e^{-i 2 pi k.d / P} (S, F)) for the carrier of ``num_bits``: a
    fold read ``d`` pixels off the tile's origin has each coefficient turned by k.d; these
    turn them back. The same for every reading, so made once."""
    freqs = carrier(PERIOD, num_bits)[0]
    steps = torch.arange(0, PERIOD, SHIFT_STEP, dtype=torch.float64)
    shifts = torch.cartesian_prod(steps, steps)
    angle = 2 * math.pi * (shifts @ freqs.T) / PERIOD
    return shifts, torch.polar(torch.ones_like(angle), -angle)


def lattice_candidates(y: torch.Tensor, period: int, num_bits: int, count: int) -> list[tuple[float, float]]:
    """The ``count`` likeliest (period in pixels, rotation in degrees) of a carrier in ``y``:
    where the known carrier frequencies, scaled and turned, fall on the strongest narrow peaks
    of the image's spectrum (its power over the local average of its power: a periodic mark
    is a peak, a photo's spectrum is smooth). Coarse grid, then refined around each peak."""
    height, width = y.shape
    window = torch.hann_window(height, periodic=False, dtype=y.dtype)[:, None] * torch.hann_window(width, periodic=False, dtype=y.dtype)[None]
    power = torch.fft.fft2((y - y.mean()) * window).abs().pow(2)
    background = F.avg_pool2d(F.pad(power[None, None], (4, 4, 4, 4), mode="circular"), 9, 1)[0, 0]
    peaks = (power / background.clamp_min(1e-20)).float()
    freqs = carrier(period, num_bits)[0].float()

    def score(periods: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:  # (n,) x (n,) -> (n,)
        theta = torch.deg2rad(angles)[:, None]
        ky, kx = freqs[:, 0][None], freqs[:, 1][None]
        fy = (ky * theta.cos() + kx * theta.sin()) / periods[:, None]  # cycles per pixel
        fx = (-ky * theta.sin() + kx * theta.cos()) / periods[:, None]
        by, bx = fy * height, fx * width
        y0, x0 = by.floor(), bx.floor()
        total = torch.zeros_like(by)
        for dy in (0, 1):
            for dx in (0, 1):
                w = (1 - (by - y0 - dy).abs()) * (1 - (bx - x0 - dx).abs())
                total += w * peaks[(y0.long() + dy) % height, (x0.long() + dx) % width]
        return total.mean(1)

    periods = period * torch.exp(torch.linspace(math.log(0.5), math.log(2.0), 280))
    angles = torch.arange(-45.0, 45.0, 0.4)
    grid_p, grid_a = torch.meshgrid(periods, angles, indexing="ij")
    coarse = torch.cat([score(p.flatten(), a.flatten()) for p, a in zip(grid_p.split(32), grid_a.split(32))]).view(grid_p.shape)
    chosen: list[tuple[float, float]] = []
    for flat in coarse.flatten().argsort(descending=True).tolist():
        p0, a0 = float(grid_p.flatten()[flat]), float(grid_a.flatten()[flat])
        if any(abs(p0 / p - 1) < 0.03 and abs(a0 - a) < 3 for p, a in chosen):
            continue
        fine_p = p0 * torch.exp(torch.linspace(-0.006, 0.006, 25))
        fine_a = a0 + torch.linspace(-0.4, 0.4, 17)
        fp, fa = torch.meshgrid(fine_p, fine_a, indexing="ij")
        best = int(score(fp.flatten(), fa.flatten()).argmax())
        chosen.append((float(fp.flatten()[best]), float(fa.flatten()[best])))
        if len(chosen) == count:
            break
    return chosen
