"""HiDDeN-style watermark networks (Zhu et al., 2018) as used by Stable Signature.

- ``HiddenEncoder``: (image, message bits) -> a residual to add to the image; the message
  is written as one small tile repeated over the whole image.
- ``HiddenExtractor``: image (any size, any crop, rescaled or not) -> one logit per bit, read
  from the features folded onto that tile. Both differ from HiDDeN where CPU training
  demanded it (see their docstrings).
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
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..colour import LUMA
from ..errors import WeightsError
from .resampling import resample

# Phase deviations this small against the readings themselves are float rounding (relative
# error ~1e-7 per value), not image content: a 512 px sky crop with 8-bit noise is far above it
FLAT_READING = 1e-10

# Official extractors take ImageNet-normalised images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.GELU())


class HiddenEncoder(nn.Module):
    """Message encoder: (image, bits) -> a residual in [-1, 1] (scaled by the caller).

    The message enters as a learned *carrier tile*: a linear layer from the bits to
    ``carriers`` x ``period`` x ``period`` values, repeated over the whole image (at a cyclic
    ``phase``) and concatenated with image features, so the residual can follow the image
    while the message is written the same way everywhere: a crop or a shift of the marked
    image still holds every bit, and ``HiddenExtractor`` reads it at whatever phase it finds.
    HiDDeN spreads the bits as constant maps instead; from those the encoder can only make
    spatial patterns through slow, nonlinear interplay with the image, and on our CPU budget
    it stalled at 55% bit accuracy. ``period`` 8 matches the 8 x 8 pixels each latent of a
    Stable Diffusion-style VAE decodes to, which lets a fine-tuned decoder write the same
    message into every image it decodes (Stable Signature)."""

    def __init__(self, num_bits: int = 48, channels: int = 32, period: int = 8, carriers: int = 8, smooth: float = 0.0,
                 luminance: bool = False):
        super().__init__()
        self.num_bits, self.channels, self.period, self.carriers = num_bits, channels, period, carriers
        self.smooth = float(smooth)
        # luminance: one residual channel added alike to R, G and B, a change of luminance only.
        # Why: JPEG keeps chroma at half resolution, and the RGB encoder put 82% of its residual
        # energy in chroma at high frequency (measured on 8 evaluation photos at 512 px, 38 dB:
        # the luminance part alone reads at chance, JPEG 95 with 4:2:0 chroma leaves 0.52)
        self.luminance = bool(luminance)
        self.message = nn.Linear(num_bits, carriers * period * period)
        self.features = nn.Sequential(_block(3, channels), _block(channels, channels))
        self.merge = _block(channels + 3 + carriers, channels)
        self.out = nn.Conv2d(channels, 1 if self.luminance else 3, 1)

    def forward(self, images: torch.Tensor, bits: torch.Tensor, phase: tuple[int, int] = (0, 0)) -> torch.Tensor:
        x = images * 2 - 1
        tile = self.message(bits.to(x.dtype) * 2 - 1).view(-1, self.carriers, self.period, self.period)
        height, width = x.shape[-2:]
        reps = (-(-(height + phase[0]) // self.period), -(-(width + phase[1]) // self.period))
        carrier = tile.repeat(1, 1, *reps)[..., phase[0]:phase[0] + height, phase[1]:phase[1] + width]
        h = self.merge(torch.cat([self.features(x), x, carrier], dim=1))
        residual = torch.tanh(self.out(h)).expand(-1, 3, -1, -1)
        if not self.smooth:
            return residual
        # low-passed, at the unfiltered residual's RMS: a plain blur shrinks an untrained
        # encoder's (mostly high-frequency) output until the image loss wins and the mark
        # vanishes (measured: bit accuracy 0.50 and a 72 dB residual after 1000 steps)
        smooth = _gaussian_blur(residual, self.smooth)
        gain = (residual.pow(2).mean(dim=(1, 2, 3), keepdim=True) / smooth.pow(2).mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))
        return smooth * gain.sqrt().detach()


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A fixed separable Gaussian low-pass (reflect padding): keeps a residual's energy below
    about 1 / (4 sigma) cycles per pixel, the band JPEG quantises gently and a 2x downscale keeps."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def luminance_low_pass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 3, H, W) -> the luminance, Gaussian low-passed by ``sigma`` px (0: not filtered), in all three channels."""
    y = (images * images.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (_gaussian_blur(y, sigma) if sigma > 0 else y).expand(-1, 3, -1, -1)


def autocorrelation(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> the circular autocorrelation of the high-passed image, summed over channels
    and normalised to 1 at lag 0: (H, W) float64 on the CPU (what the period and angle searches
    read: small scalar work, on the CPU whatever device the image is on)."""
    x = image.float()  # all channels: the tile is coloured
    residual = x - F.avg_pool2d(F.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, 1)[0]
    spectrum = torch.fft.rfft2(residual)
    auto = torch.fft.irfft2(spectrum.abs().pow(2), s=residual.shape[-2:]).sum(0).double().cpu()
    return auto / auto[0, 0].clamp_min(1e-12)


def period_candidates(image: torch.Tensor, period: int, count: int = 3, low: float = 0.5, high: float = 2.0,
                      resolution: float = 0.005) -> list[float]:
    """The ``count`` likeliest periods (in pixels) of a periodic pattern in ``image`` (3, H, W),
    between ``low`` and ``high`` times ``period``: the peaks of the high-passed image's
    autocorrelation along both axes, each scored over all its multiples (a rescaled tile
    repeats at k x its period for every k, natural texture does not). Sub-pixel: a period
    that is wrong by 1% drifts by a whole pixel every 100 pixels and ruins the fold."""
    auto = autocorrelation(image)
    height, width = auto.shape
    rows, cols = auto[:, 0], auto[0, :]
    periods = torch.arange(low * period, high * period + 1e-9, resolution * period, dtype=torch.float64)

    def at(profile: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:  # linear interpolation
        base = lags.floor().long()
        frac = lags - base
        return profile[base] * (1 - frac) + profile[base + 1] * frac

    limit = min(height, width) // 2 - 1
    multiples = torch.arange(1, int(limit // periods[0]) + 2, dtype=periods.dtype)
    lags = periods[:, None] * multiples[None, :]  # (periods, multiples)
    valid = lags <= limit
    lags = lags.clamp(max=limit)
    scores = (0.5 * (at(rows, lags) + at(cols, lags)) * valid).sum(1) / valid.sum(1).clamp_min(1)
    # local maxima, strongest first, at least 2% apart
    chosen: list[float] = []
    for i in scores.argsort(descending=True).tolist():
        t = float(periods[i])
        left, right = scores[max(i - 1, 0)], scores[min(i + 1, len(scores) - 1)]
        if scores[i] < left or scores[i] < right or any(abs(t / c - 1) < 0.02 for c in chosen):
            continue
        chosen.append(t)
        if len(chosen) == count:
            break
    return chosen


def comb_scores(auto: torch.Tensor, periods: torch.Tensor, angles: torch.Tensor, max_lag: float) -> torch.Tensor:
    """(periods, angles) scores of a square lattice of each period turned by each angle
    (degrees) in an autocorrelation ``auto`` (H, W; lags up to ``max_lag`` < H / 2, W / 2):
    the mean, bilinearly interpolated, at every multiple of the period up to ``max_lag`` along
    both of the lattice's axes (``period_candidates``' score, turned)."""
    height, width = auto.shape
    centred = torch.fft.fftshift(auto).float()[None, None]  # lag 0 at (height // 2, width // 2)
    multiples = torch.arange(1, int(max_lag // float(periods.min())) + 1, dtype=torch.float32)
    theta = torch.deg2rad(angles.float())[None, :, None]  # (1, A, 1)
    lags = (periods.float()[:, None, None] * multiples).expand(-1, theta.shape[1], -1)  # (P, A, K)
    points = []
    # the lattice's axes: (dy, dx) = lag (cos, -sin) and lag (sin, cos)
    for dy, dx in ((lags * theta.cos(), -lags * theta.sin()), (lags * theta.sin(), lags * theta.cos())):
        points.append(torch.stack([(width // 2 + dx) / (width - 1) * 2 - 1, (height // 2 + dy) / (height - 1) * 2 - 1], -1))
    grid = torch.stack(points).reshape(1, -1, 1, 2)
    values = F.grid_sample(centred, grid, mode="bilinear", align_corners=True).view(2, *lags.shape).mean(0)
    valid = lags <= max_lag
    return ((values * valid).sum(-1) / valid.sum(-1).clamp_min(1)).double()


def rotation_candidates(image: torch.Tensor, period: int, max_angle: float, count: int = 2, min_angle: float = 1.0,
                        low: float = 0.9, high: float = 1.1) -> list[tuple[float, float]]:
    """Up to ``count`` likeliest (period in pixels, angle in degrees) of a periodic tile turned
    by ``min_angle`` to ``max_angle`` degrees either way in ``image`` (3, H, W), at ``low`` to
    ``high`` times ``period`` (a turn keeps the scale; a turned and rescaled image is not
    searched); only those where the lattice shows more clearly turned than upright (none for
    an upright image). The angle is the one that ``resampling.resample`` turns back.

    Found like ``period_candidates``, from the autocorrelation's peaks at the multiples of the
    period, along both axes of a turned lattice, over every lag: first every half degree and
    1% of the period, then 0.05 degree and 0.1% around each peak (a tile 0.2 degree off drifts
    by a pixel every 290 px; the reading's half-pixel offsets take up the rest). Lags up to
    64 px alone placed a Stable Signature decoder's weaker lattice 2-3 degrees off on 3
    photos of 4; every lag, on 3 of 4, and on the fourth the true angle came second (a photo's
    own texture 2.5 degrees away scored 0.0110 against 0.0101), hence two candidates, which
    the reader tells apart by the fold's coherence."""
    # a turned image's cut corners are straight edges, and a pixelated edge at angle a is a
    # staircase of period 1 / sin a: read the central square that a turn by up to max_angle
    # leaves whole
    turn = math.radians(max_angle)
    height, width = image.shape[-2:]
    side = int(min(height, width) / (math.cos(turn) + math.sin(turn)))
    top, left = (height - side) // 2, (width - side) // 2
    auto = autocorrelation(image[..., top:top + side, left:left + side])
    limit = side // 2 - 1
    if limit < 2 * high * period:
        return []
    periods = period * torch.arange(low, high + 1e-9, 0.01, dtype=torch.float64)
    angles = torch.arange(-max_angle, max_angle + 1e-9, 0.5, dtype=torch.float64)
    coarse = comb_scores(auto, periods, angles, float(limit))
    upright = float(coarse[:, angles == 0].max())
    coarse[:, angles.abs() < min_angle] = -math.inf
    found: list[tuple[float, float]] = []
    peak_angles: list[float] = []
    for flat in coarse.flatten().argsort(descending=True).tolist():
        if not float(coarse.flatten()[flat]) > upright or len(found) == count:
            break
        p0, a0 = float(periods[flat // len(angles)]), float(angles[flat % len(angles)])
        if any(abs(a0 - a) < 1.5 for a in peak_angles):
            continue  # the same peak again
        peak_angles.append(a0)
        fine_p = p0 * (1 + torch.linspace(-0.01, 0.01, 21, dtype=torch.float64))
        fine_a = a0 + torch.linspace(-0.5, 0.5, 21, dtype=torch.float64)
        i = int(comb_scores(auto, fine_p, fine_a, float(limit)).argmax())
        found.append((float(fine_p[i // len(fine_a)]), float(fine_a[i % len(fine_a)])))
    return found


class HiddenExtractor(nn.Module):
    """Bit extractor that is translation-invariant by construction: full-resolution
    convolutions, then the feature maps *folded* onto one ``period`` x ``period`` tile
    (averaged over all tiles, the way a periodic mark adds up coherently and the image
    averages out), then one linear read-out per cyclic phase of that tile; the phase whose
    logits stand out most from the others wins. Any crop, at any offset, is read like the whole
    image, with fewer tiles to average. The winner is chosen by a squared distance, blind to
    which way the logits point, so unmarked images still give near-fair bits (the
    benchmarks' calibration on unseen photos checks it).

    Rescaled images (a resize, a crop resized back) change the period: the image is also
    read after rescaling by ``period / T`` for the ``scale_candidates`` likeliest periods T
    found by ``period_candidates``; a rescaled reading wins only if its fold is
    ``RESCALED_MARGIN`` times more coherent than the own-scale one (``_best_over_scales``
    says why; 0 candidates: read images at their own size only, as during training). A
    turned image (a rotation) is read once more, turned back and rescaled, where
    ``rotation_candidates`` finds the tile's lattice more clearly turned by 1 to ``MAX_ANGLE``
    degrees than upright (two likeliest turns); those readings compete under the same rule.
    HiDDeN (and Stable Signature) pool globally instead and must learn the invariance; the
    fold is the same pooling with the tile's period made explicit, which trains on a CPU.
    """

    RESCALED_MARGIN = 10.0  # see _best_over_scales
    MAX_ANGLE = 30.0  # degrees either way of the turned tile searched for (rotation_candidates); 0: none
    SUBPIXEL_OFFSETS = ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5))  # see _best_offset
    # (share of the image's pixels, slack) of each pre-screen window, smallest first: see _may_win
    PRESCREEN = ((0.125, 4.0), (0.5, 1.5))

    def __init__(self, num_bits: int = 48, channels: int = 32, period: int = 8, layers: int = 3,
                 scale_candidates: int = 3, front_sigma: Optional[float] = None):
        super().__init__()
        self.num_bits, self.channels, self.period, self.layers = num_bits, channels, period, layers
        self.scale_candidates = scale_candidates
        # None: the colour image, as trained; a number: only its luminance, low-passed by a
        # Gaussian of this sigma (``with_front_end`` says why)
        self.front_sigma = front_sigma
        self.forced_phase: Optional[int] = None  # see reading_as_trained
        convs: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1)]
        for _ in range(layers - 1):
            convs += [nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1)]
        self.body = nn.Sequential(*convs).to(memory_format=torch.channels_last)  # see fold
        self.linear = nn.Linear(channels * period * period, num_bits)

    def fold(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> the features averaged over all tiles, (B, channels, period, period),
        and the fold's *coherence* (B,): the spread of that average tile over what the spread
        within tiles would give by chance (an F statistic, ~1 without a periodic pattern, in
        the hundreds and more for a mark read at its own scale).

        Only tiles clear of the edges are folded (where the images allow): within ``layers``
        pixels of an edge the features see the convolutions' zero padding, a pattern with the
        same shape in every image that would fold into the tile like a mark. Tiles keep their
        place on the image's own grid, so phases mean the same with or without the edges."""
        if self.front_sigma is not None:
            images = luminance_low_pass(images, self.front_sigma)
        # channels-last: the CPU convolutions run about twice as fast in that layout (the same
        # sums in another order: readings move by about 1e-5 of their size)
        h = self.body((images * 2 - 1).contiguous(memory_format=torch.channels_last))
        p = self.period
        first, rows, cols = self._tile_grid(*h.shape[-2:])
        # (B, H, W, C): a free view of channels-last features, and the tiles below are views too
        h = h.permute(0, 2, 3, 1)[:, first * p:(first + rows) * p, first * p:(first + cols) * p]
        h = h.reshape(h.shape[0], rows, p, cols, p, h.shape[-1])
        # one dimension at a time, the outer one first: the rows reduce as whole contiguous
        # slabs, about four times faster than both at once on the CPU (rounding moves by ~1e-7)
        tile = h.mean(dim=1).mean(dim=2)  # (B, p, p, C)
        between = (tile - tile.mean(dim=(1, 2), keepdim=True)).pow(2).mean(dim=(1, 2, 3))
        within = (h - tile[:, None, :, None]).square_().mean(dim=1).mean(dim=(1, 2, 3, 4)) / (rows * cols)
        return tile.permute(0, 3, 1, 2), between / within.clamp_min(1e-12)

    def _tile_grid(self, height: int, width: int) -> tuple[int, int, int]:
        """(first tile, rows, cols) of the tiles ``fold`` averages for an image of this size."""
        p = self.period
        if height < p or width < p:
            raise ValueError(f"images smaller than the {p} px period cannot be read")
        first = -(-self.layers // p)
        rows, cols = (height - self.layers) // p - first, (width - self.layers) // p - first
        if rows < 1 or cols < 1:  # too small to leave the edges out
            first, rows, cols = 0, height // p, width // p
        return first, rows, cols

    def phase_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, period**2, num_bits): the read-out at every cyclic phase of the folded tile; and the coherence (B,)."""
        tile, coherence = self.fold(images)
        p = self.period
        rolled = torch.stack([torch.roll(tile, (dy, dx), dims=(2, 3)) for dy in range(p) for dx in range(p)], dim=1)
        return self.linear(rolled.flatten(2)), coherence

    def forward(self, images: torch.Tensor, phase: Optional[int] = None) -> torch.Tensor:
        """Logits at the phase (and scale) where the mark stands out most, less the average over
        phases (``_best_phase`` says why); ``phase`` forces one (training)."""
        logits, coherence = self.phase_logits(images)
        phase = self.forced_phase if phase is None else phase
        if phase is not None:
            return logits[:, phase] - logits.mean(1)
        best = torch.stack([self._best_phase(own) for own in logits])
        if not self.scale_candidates:
            return best
        return torch.stack([self._best_over_scales(image, *own) for image, own in zip(images, zip(best, coherence.detach()))])

    @staticmethod
    def _best_phase(readings: torch.Tensor) -> torch.Tensor:
        """Of the (phases, bits) readings of one image: the phase that sits furthest from the
        average over phases, *less that average*.

        What every phase shares is not a mark: a periodic mark shows at one phase, while the
        read-out's response to the image's overall texture (its mean feature levels) is the
        same at every phase. Left in, that shared part pointed the same way on most photos:
        unmarked photos none of the networks saw agreed on 0.56 of their bits on average, up
        to 46 of 48 with the commonest message (129 corpus images, 512 px). Taken out, the
        rest is a fluctuation symmetric in sign, so the bits are near-fair on any photo
        (0.50 on the same images; docs/statistics.md).

        An image with nothing of the tile's period in it (a flat crop) reads the same at every
        phase: what is left is rounding, the same on every such image, so it reads as zeros,
        exact ties that ``ExtractorBits`` breaks by a coin."""
        deviations = readings - readings.mean(0)
        energy = deviations.pow(2).sum(-1)
        if float(energy.detach().max()) <= FLAT_READING * float(readings.detach().pow(2).sum(-1).max()):
            return torch.zeros_like(deviations[0])
        return deviations[energy.argmax()]

    def _best_over_scales(self, image: torch.Tensor, best: torch.Tensor, coherence: torch.Tensor) -> torch.Tensor:
        """The reading of one image at its own scale, unless one of its likeliest rescalings
        folds ``RESCALED_MARGIN`` times more coherently (then the most coherent of those).

        Coherence, not the logits' energy, compares scales (measured: a downscaled image has
        more detail and larger logits; on marked images the right scale's coherence is tens
        to thousands of times the others'). The margin is there because the mark's harmonics
        are coherent too: a tile with a strong period-4 component also folds coherently after
        a 2x upscale, and one of period 8 after a 2x downscale. Measured on photos through a
        fine-tuned decoder: the most coherent reading was a harmonic on 1 photo of 16, the
        shortest coherent period on 4 of 16; preferring the own scale, on none. The price:
        an image halved in size is read at its own scale if that reading is coherent."""
        chosen, strongest = best, float(coherence) * self.RESCALED_MARGIN
        views = []  # (None, or the turned tile's (period, angle); the view) of each candidate
        for t in period_candidates(image.detach(), self.period, self.scale_candidates):
            if abs(t / self.period - 1) < 0.01:
                continue  # the image's own scale, read already
            size = [max(self.period, round(n * self.period / t)) for n in image.shape[-2:]]
            views.append((None, lambda size=size, t=t: F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                                                    antialias=t < self.period)))
        for turned in rotation_candidates(image.detach(), self.period, self.MAX_ANGLE) if self.MAX_ANGLE else []:
            views.append((turned, lambda turned=turned: resample(image, self.period / turned[0], turned[1], self.period)[None]))
        winner_turn = None
        for turn, view in views:
            rescaled = view()
            if not self._may_win(rescaled, strongest, image.shape[-2] * image.shape[-1]):
                continue
            logits, score = self.phase_logits(rescaled)
            score = float(score[0].detach())
            if score > strongest:
                chosen, strongest, winner_turn, winner_logits = self._best_phase(logits[0]), score, turn, logits[0]
        # an upright rescaling inverts the resize's own pixel grid and lands on whole pixels;
        # a turn back lands anywhere
        return chosen if winner_turn is None else self._best_offset(image, *winner_turn, winner_logits)

    def _best_offset(self, image: torch.Tensor, period: float, angle: float, unmoved: torch.Tensor) -> torch.Tensor:
        """The reading of ``image`` resampled onto the tile's grid (``period``, ``angle``) with
        the grid at whole and half pixels (down, across), whichever's best phase stands out
        most clearly from the next best (the ratio of their energies about the phase average).

        Resampling leaves the tile's grid at an arbitrary fraction of a pixel; half-way
        between two phases the fold is as coherent as ever, but the read-out sees a blend of
        two phases, two phases stand out about equally, and the bits come out at chance.
        Measured on one marked photo turned by 3, 5 and 10 degrees (and, read this way, resized
        to 0.75 and cropped and resized back): bit accuracy 0.38-0.62 at the worst offset and
        0.88-1.00 at the best, with the fold's coherence within a few % of each other and the
        winning phase's energy largest at a wrong offset after the resize; the ratio picked an
        offset reading 0.88-1.00 in all eight cases (a quarter of a pixel off, the most a
        half-pixel grid leaves, read 0.79-1.00). Only turned views are read this way: an
        untrained extractor's ratio picked a wrong offset for a rescaled synthetic tile, and
        an upright rescaling that inverts the resize's own grid needs no offset. ``unmoved``:
        the (phases, bits) readings at offset (0, 0), which the candidate search made already."""
        best, clearest = None, -1.0
        for offset in self.SUBPIXEL_OFFSETS:
            if offset == (0.0, 0.0):
                readings = unmoved
            else:
                readings = self.phase_logits(resample(image, self.period / period, angle, self.period, offset)[None])[0][0]
            energy = (readings - readings.mean(0)).detach().pow(2).sum(-1)
            top = energy.topk(2).values
            ratio = float(top[0] / top[1].clamp_min(1e-30))
            if ratio > clearest:
                best, clearest = self._best_phase(readings), ratio
        return best

    def _may_win(self, rescaled: torch.Tensor, strongest: float, pixels: int) -> bool:
        """Whether a rescaled reading can beat ``strongest``, judged first on central windows
        (``PRESCREEN``: their share of the image's pixels, smallest first; most of the reading's
        cost is the convolutions over the rescaled image, up to four times the image's pixels).

        A periodic pattern folded over n tiles has coherence F = 1 + n * s (s: its power over
        the host's per tile), so the whole image's F is predicted from a window's as
        1 + (F_window - 1) * n_image / n_window. The reading is skipped as soon as one window's
        prediction times its slack stays under ``strongest`` (the mark is written over the
        whole image, but the host in a window may hide it more than on average). Unmarked
        structure does not grow that way: in one unmarked 512 px photo rescaled to 931 px,
        central windows of 64 to 512 px folded with F of 1.6 to 2.4 and the whole image with 1.0,
        while the small window's prediction multiplies its F - 1 by 28 there. The half-image
        window's prediction is the closer one, so it gets the smaller slack; it costs a sixth
        of the reading it saves. Measured against the full search on attacked
        photos, marked and clean: docs/stable_signature.md."""
        # shares of the smaller of the two images: a view smaller than the image (a turn
        # back, a downscale) is worth screening too
        pixels = min(pixels, rescaled.shape[-2] * rescaled.shape[-1])
        return all(self._window_may_win(rescaled, strongest, share * pixels, slack) for share, slack in self.PRESCREEN)

    def _window_may_win(self, rescaled: torch.Tensor, strongest: float, window_pixels: float, slack: float) -> bool:
        height, width = rescaled.shape[-2:]
        side = math.sqrt(window_pixels)
        win_h, win_w = (min(n, max(4 * self.period, int(side // self.period) * self.period)) for n in (height, width))
        _, rows, cols = self._tile_grid(height, width)
        _, win_rows, win_cols = self._tile_grid(win_h, win_w)
        ratio = rows * cols / (win_rows * win_cols)
        if ratio < 1.5:
            return True  # the window would cost about as much as the reading itself
        top = (height - win_h) // (2 * self.period) * self.period
        left = (width - win_w) // (2 * self.period) * self.period
        with torch.no_grad():  # a decision, not a reading: nothing to differentiate
            coherence = float(self.fold(rescaled[..., top:top + win_h, left:left + win_w])[1][0])
        return 1 + slack * max(coherence - 1, 0.0) * ratio > strongest


@contextmanager
def reading_as_trained(module: nn.Module):
    """Within: every ``HiddenExtractor`` in ``module`` reads as in its training's first
    steps: at the images' own scale and at phase 0, no search. For training a generator
    against it (Stable Signature's decoder): a decoder writes on its own fixed 8 x 8 grid,
    so one phase is all it needs, and a search whose winner changes from image to image
    while there is no mark yet sends it contradictory gradients (measured: 100 steps at
    lr 1e-3 left the bits at 0.61 with the search, see README)."""
    extractors = [m for m in module.modules() if isinstance(m, HiddenExtractor)]
    saved = [(m.scale_candidates, m.forced_phase) for m in extractors]
    for m in extractors:
        m.scale_candidates, m.forced_phase = 0, 0
    try:
        yield module
    finally:
        for m, (count, phase) in zip(extractors, saved):
            m.scale_candidates, m.forced_phase = count, phase


class WhitenedExtractor(nn.Module):
    """extractor(x) -> (logits - mean) @ W^T with W the ZCA whitening of clean-image logits."""

    def __init__(self, extractor: nn.Module, num_bits: int):
        super().__init__()
        self.extractor = extractor
        self.num_bits = num_bits
        self.register_buffer("mean", torch.zeros(num_bits))
        self.register_buffer("whiten", torch.eye(num_bits))

    @torch.no_grad()
    def fit_whitening(self, logits: torch.Tensor, eps: float = 1e-6, *, centre: bool = True) -> None:
        """ZCA on raw extractor logits of unwatermarked images (N > num_bits of them).

        ``centre=False`` for outputs centred by construction (``HiddenExtractor``'s phase
        deviations): a fitted mean would be one fixed offset, and images with little to read
        (flat, smooth) would all read its sign."""
        if logits.shape[0] <= self.num_bits:
            raise ValueError(f"whitening {self.num_bits} outputs needs more than {self.num_bits} images, got {logits.shape[0]}")
        x = logits.double()
        mean = x.mean(0) if centre else torch.zeros_like(x[0])
        cov = (x - mean).T @ (x - mean) / (len(x) - 1)
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
    arch = {"num_bits": raw.num_bits, "channels": raw.channels, "period": raw.period, "layers": raw.layers,
            "scale_candidates": raw.scale_candidates, "encoder_channels": encoder.channels, "carriers": encoder.carriers,
            **({"smooth": encoder.smooth} if encoder.smooth else {}), **({"luminance": True} if encoder.luminance else {}),
            **({"front_sigma": raw.front_sigma} if raw.front_sigma is not None else {})}
    meta = {"format": "wmkit-hidden", "version": "2", "arch": json.dumps(arch)}
    files = [folder / "encoder.safetensors", folder / "extractor.safetensors", folder / "provenance.json"]
    save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in encoder.state_dict().items()}, files[0], metadata=meta)
    # the whitening stays fp32: it multiplies logits whose scale fp16 would round away
    state = {k: (v.half() if v.is_floating_point() and not k.startswith(("mean", "whiten")) else v).contiguous()
             for k, v in extractor.state_dict().items()}
    save_file(state, files[1], metadata=meta)
    files[2].write_text(json.dumps({**provenance, "arch": arch}, indent=2) + "\n")
    return files


def build_hidden(arch: dict[str, Any]) -> tuple[HiddenEncoder, WhitenedExtractor]:
    """Untrained (encoder, whitened extractor) of the architecture ``save_hidden`` records."""
    encoder = HiddenEncoder(arch["num_bits"], arch["encoder_channels"], arch["period"], arch["carriers"], arch.get("smooth", 0.0),
                            arch.get("luminance", False))
    raw = HiddenExtractor(arch["num_bits"], arch["channels"], arch["period"], arch["layers"], arch["scale_candidates"],
                          arch.get("front_sigma"))
    return encoder, WhitenedExtractor(raw, arch["num_bits"])


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
        if "period" not in arch:
            raise WeightsError(f"{paths[1]}: a version 1 (positional) wmkit HiDDeN extractor, no longer read; "
                               "retrain it with `python -m wmkit.train.hidden`")
        encoder, extractor = build_hidden(arch)
        encoder.load_state_dict({k: v.float() for k, v in load_file(str(paths[0])).items()})
        extractor.load_state_dict({k: v.float() for k, v in load_file(str(paths[1])).items()})
    except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{folder}: unreadable HiDDeN weights ({str(exc).splitlines()[0]})") from exc
    provenance_path = folder / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return encoder.eval(), extractor.eval(), provenance


def default_hidden_dir() -> Optional[Path]:
    from ..paths import weights_dir

    return weights_dir() / "hidden"


def with_front_end(extractor: WhitenedExtractor, sigma: float, clean_images: Sequence[torch.Tensor]) -> WhitenedExtractor:
    """A copy of ``extractor`` that reads only the luminance, low-passed by ``sigma`` px, with its
    whitening refitted on ``clean_images`` (unmarked; more than ``num_bits`` of them).

    For a generator trained against the extractor (Stable Signature's decoder): what the
    extractor cannot see, the decoder has no reason to write. JPEG keeps luminance at full
    resolution and quantises high frequencies first, so a decoder fine-tuned against this
    reading writes a luminance mark in the band JPEG keeps (measured: docs/stable_signature.md,
    "A luminance, low-pass reading"). The convolution weights are the trained ones."""
    import copy

    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not 0 <= sigma <= 8:
        raise ValueError(f"the front end's sigma must be a number of pixels in [0, 8], got {sigma!r}")
    front = copy.deepcopy(extractor)
    raw = front.extractor
    raw.front_sigma = float(sigma)
    readings = []
    with torch.no_grad():
        for image in clean_images:
            readings.append(raw(image[None].float()))
    front.fit_whitening(torch.cat(readings), centre=False)
    return front.eval()
