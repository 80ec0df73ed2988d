"""What every initial-noise scheme shares (Tree-Ring, Gaussian Shading).

Marking: the pipeline's own initial noise is drawn exactly as it would be (same
generator, same shape) and the scheme rewrites it (``watermark_latents``); the
result goes to the pipeline as ``latents=``. Detection: VAE-encode and DDIM-invert
(empty prompt, guidance 1) to estimate that noise, then a scheme-specific test.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..imageio import as_image_list
from ..keys import Key
from ..types import DetectionResult
from .base import PipelineHook, ScoreWatermarker


def latent_shape(pipe, args: tuple, kwargs: dict) -> tuple[int, int, int, int]:
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


# candidate undo transforms of the geometric search: rotations (degrees) x zooms; the
# latent-level stage reads every one on the coarse grid, the image-level stage reads a
# few on the fine grid (the best coarse angles, refined); the p-value counts both grids
SEARCH_ANGLES = tuple(float(a) for a in range(-30, 31, 3))
SEARCH_FINE_ANGLES = tuple(float(a) for a in range(-30, 31, 1))
SEARCH_ZOOMS = (1.0, 1.07, 1.155, 1.25, 1.33)
SEARCH_STAGE_TWO_Z = 2.0  # the best latent-level candidate is re-read from the image above this z
SEARCH_WINDOW = 4.0  # degrees around the best coarse angle that the image-level stage scans
SEARCH_SCAN_STRIDE = 3.0  # degrees between the scan's first readings (see scan_angles)
SEARCH_SCAN_STEPS = 2  # inversion steps of that scan (measured: the same peak as 10 steps, half the cost)


def _undo(batch: torch.Tensor, degrees: float, zoom: float) -> torch.Tensor:
    """Sample ``batch`` (B, C, H, W) at positions rotated by ``degrees`` and scaled by ``zoom``
    about the centre: undoes a rotation by -degrees and a zoom-in by ``zoom``; zeros outside."""
    import math

    import torch.nn.functional as F

    t = math.radians(degrees)
    # a rotation in pixels, written in affine_grid's coordinates (each axis normalised to [-1, 1])
    aspect = batch.shape[-1] / batch.shape[-2]
    theta = torch.tensor([[math.cos(t), -math.sin(t) / aspect, 0.0], [math.sin(t) * aspect, math.cos(t), 0.0]],
                         dtype=torch.float32) * zoom
    grid = F.affine_grid(theta[None].expand(len(batch), 2, 3), list(batch.shape), align_corners=False)
    return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inside(height: int, width: int, degrees: float, zoom: float, factor: int = 1) -> torch.Tensor:
    """(H/factor, W/factor) mask of the cells an undo fills entirely from inside the frame."""
    import torch.nn.functional as F

    filled = _undo(torch.ones(1, 1, height, width), degrees, zoom)
    if factor > 1:
        filled = F.avg_pool2d(filled, factor)
    return filled[0, 0] > 0.99


def _search_candidates(angles=SEARCH_ANGLES) -> list[tuple[float, float]]:
    """Rotations alone and zooms alone (a rotation with a zoom is not searched: the joint
    grid's false peaks misled the search on rotated images more often than it helped)."""
    return [(a, 1.0) for a in angles if a != 0.0] + [(0.0, z) for z in SEARCH_ZOOMS if z != 1.0]


def scan_angles(centre: float, score, window: float = SEARCH_WINDOW, stride: float = SEARCH_SCAN_STRIDE,
                give_up_below: float = -np.inf) -> tuple[float, dict[float, float]]:
    """The angle of the fine grid within ``window`` degrees of ``centre`` that ``score``
    rates best (a list of angles -> one number per angle, higher is better), found coarse
    to fine: the centre and every ``stride`` degrees either side, then 1 degree either side
    of the best of those. ``score`` is called once per round with all of that round's
    angles, so a caller can invert them as one batch (on this CPU three 2-step inversions
    in one batch cost 0.6 s against 0.75 s one by one).
    Returns (best angle, every score computed). A mark read after undoing a rotation peaks
    at the right angle and falls off over a few degrees (measured on 24 rotated generations:
    the 2-step reading loses about 10% one degree off, 40% three degrees off), so the peak
    of a window of 9 angles is found with at most 5 readings. The identity (0 degrees) is
    not a candidate of the search and is never scored. When no first reading reaches
    ``give_up_below`` the scan stops there (no mark worth refining)."""
    fine = set(SEARCH_FINE_ANGLES) - {0.0}
    scores: dict[float, float] = {}

    def read(angles):
        new = list(dict.fromkeys(a for a in angles if a in fine and a not in scores and abs(a - centre) <= window))
        if new:
            scores.update(zip(new, (float(v) for v in score(new))))

    steps = int(window // stride)
    read([centre + k * stride for k in range(-steps, steps + 1)])
    if not scores:  # the centre is the identity and the stride leaves the window: its neighbours
        read([centre - 1.0, centre + 1.0])
    if scores and max(scores.values()) >= give_up_below:
        best = max(scores, key=scores.get)
        read([best - 1.0, best + 1.0])
    return (max(scores, key=scores.get) if scores else centre), scores


def _better_of_two(at_pipeline: DetectionResult, at_own: DetectionResult) -> DetectionResult:
    """The reading with the smaller p-value, its p-values doubled for the two looks."""
    from dataclasses import replace

    own_won = at_own.extra["log10_p_value"] < at_pipeline.extra["log10_p_value"]
    winner = at_own if own_won else at_pipeline
    log10_p = min(0.0, winner.extra["log10_p_value"] + float(np.log10(2.0)))
    return replace(winner, p_value=10.0 ** log10_p, p_value_analytic=min(1.0, 2.0 * winner.p_value_analytic),
                   extra=dict(winner.extra, log10_p_value=log10_p, read_at_own_size=float(own_won)))


class KeyedNoise(PipelineHook):
    """Each call's initial noise drawn exactly as the pipeline would (same generator(s), same
    shape), with the key written into it (``watermark_latents``), passed as ``latents=``."""

    def call_kwargs(self, pipe, args: tuple, kwargs: dict) -> dict:
        latents = kwargs.get("latents")
        if latents is None:
            from diffusers.utils.torch_utils import randn_tensor

            latents = randn_tensor(
                latent_shape(pipe, args, kwargs), generator=kwargs.get("generator"),
                device=getattr(pipe, "_execution_device", None) or pipe.unet.device, dtype=pipe.unet.dtype,
            )
        kwargs["latents"] = self.watermarker.watermark_latents(latents, self.key)
        return kwargs


class InitialNoiseWatermarker(ScoreWatermarker):
    """A key written into the initial noise of a diffusion pipeline, read back by DDIM inversion.
    It has no ``embed``: the mark lives in the initial noise, nothing can be added to a given image."""

    hook = KeyedNoise
    #: schemes that read each latent value where it was written (Gaussian Shading, PRC) need the
    #: latent grid the mark was written on: images of another size are read resized to the
    #: pipeline's size (a resized generation) and, where ``_own_size_readable``, at their own
    #: size too (a generation at another size), the better reading counted twice (Bonferroni)
    reads_value_by_value: ClassVar[bool] = False
    #: the own-size reading of a value-by-value scheme is tried up to this many times the
    #: pipeline's side: a generation is rarely larger, and a large photo would cost minutes
    OWN_SIZE_LIMIT: ClassVar[float] = 2.0

    def __init__(self, *, pipeline: Any = "tiny", inversion_steps: int = 10, calibration: Any = "auto"):
        if not isinstance(inversion_steps, int) or isinstance(inversion_steps, bool) or inversion_steps < 1:
            raise ConfigError(f"inversion_steps must be a positive integer, got {inversion_steps!r}")
        self.inversion_steps = inversion_steps
        self._pipeline_spec = pipeline
        self._pipe = None
        self._at_own_size = False  # see _sized and _at_each_size
        self._calibration_spec = calibration

    @property
    def pipe(self):
        """The pipeline used for detection: loaded on first use when given by name or path."""
        if self._pipe is None:
            from ..diffusion import resolve_pipeline

            self._pipe = resolve_pipeline(self._pipeline_spec, share=False)
        return self._pipe

    @property
    def model_name(self) -> str:
        """'tiny' for the shipped pipeline (by name or loaded from its folder), else its path or class."""
        from ..diffusion import pipeline_label

        return pipeline_label(self._pipeline_spec)

    @abstractmethod
    def watermark_latents(self, latents: torch.Tensor, key: Key) -> torch.Tensor:
        """Write the key into initial latents (B, C, h, w); new latents of the same dtype."""

    @staticmethod
    def magnitude_digest(latent: torch.Tensor) -> bytes:
        """SHA-256 of one latent's (C, h, w) magnitudes: per-image randomness for schemes that
        set only the signs (fresh for fresh noise, the same for the same seed, and a function
        of the half of the noise that marking keeps)."""
        import hashlib

        return hashlib.sha256(latent.detach().abs().to(torch.float32).cpu().contiguous().numpy().tobytes()).digest()

    @staticmethod
    def with_signs(latents: torch.Tensor, negative_bits) -> torch.Tensor:
        """Latents (B, C, h, w) whose values keep their magnitudes and take the signs
        ``negative_bits(latent)`` gives for each one (n uint8 bits, 1 = negative)."""
        if latents.dim() != 4:
            raise ConfigError(f"expected latents (B, C, h, w), got {tuple(latents.shape)}")
        out = []
        for z in latents:
            sign = 1.0 - 2.0 * np.asarray(negative_bits(z), dtype=np.float32)
            out.append(z.abs() * torch.from_numpy(sign).view(z.shape).to(device=z.device, dtype=z.dtype))
        return torch.stack(out)

    def extract(self, images) -> torch.Tensor:
        """DDIM-inverted initial latents (B, C, h, w) of the images."""
        image_list, _ = as_image_list(images)
        sized = [self._sized(img) for img in image_list]
        if len({tuple(img.shape[-2:]) for img in sized}) > 1:
            # their latents differ in size and the detectors work on one batch of latents
            raise InputError(f"'{self.name}' reads images of one size per call; got "
                             f"{sorted({'x'.join(map(str, img.shape[-2:])) for img in sized})}: detect them in separate calls")
        return torch.cat([self._invert(img[None]) for img in sized])

    # -- detection at each readable size ----------------------------------------------------
    def detect(self, images, key: Key) -> list[DetectionResult]:
        self.check_key(key)
        return self._at_each_size(images, lambda batch: self._detect(batch, key))

    def identify(self, images, keys: list[Key], *, correction: str = "sidak") -> list[DetectionResult]:
        for key in keys:
            self.check_key(key)
        return self._at_each_size(images, lambda batch: self._identify(batch, keys, correction=correction))

    def _detect(self, images: list[torch.Tensor], key: Key) -> list[DetectionResult]:
        """``detect`` of images read at one size (the schemes with a search override it)."""
        return self.results_from_signal(self.extract(images), key)

    def _identify(self, images: list[torch.Tensor], keys: list[Key], *, correction: str) -> list[DetectionResult]:
        return super().identify(images, keys, correction=correction)

    def _pipeline_side(self) -> int:
        side = int(getattr(self.pipe, "default_sample_size", None) or self.pipe.unet.config.sample_size)
        return side * int(getattr(self.pipe, "vae_scale_factor", 8))

    def _own_size_readable(self, image: torch.Tensor) -> bool:
        """Whether a value-by-value scheme also reads this image at its own size: not the
        pipeline's size, a size a pipeline generates (sides in steps of 8 latent cells) and
        no larger than ``OWN_SIZE_LIMIT`` times the pipeline's side."""
        side = self._pipeline_side()
        step = 8 * int(getattr(self.pipe, "vae_scale_factor", 8))
        height, width = image.shape[-2:]
        return ((height, width) != (side, side) and height % step == 0 and width % step == 0
                and max(height, width) <= self.OWN_SIZE_LIMIT * side)

    def _at_each_size(self, images, read) -> list[DetectionResult]:
        """``read`` (a list of images of one size -> results) of the images at the pipeline's
        size and, for a value-by-value scheme, again at each image's own size where that is
        readable: the smaller p-value of the two, doubled (Bonferroni over the two readings;
        each is a valid test on its own). ``extra["read_at_own_size"]`` says which won."""
        image_list, _ = as_image_list(images)
        if not self.reads_value_by_value:
            return read(image_list)
        results = read(image_list)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(image_list):
            if self._own_size_readable(image):
                by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
        if not by_size:
            return results
        self._at_own_size = True
        try:
            for indices in by_size.values():
                for i, own in zip(indices, read([image_list[i] for i in indices])):
                    results[i] = _better_of_two(results[i], own)
        finally:
            self._at_own_size = False
        return results

    def _sized(self, image: torch.Tensor) -> torch.Tensor:
        """The image as it is inverted: at the pipeline's default size for schemes that read
        value by value (resized when it is not; as it is during ``_at_each_size``'s own-size
        reading), as it is otherwise."""
        if not self.reads_value_by_value or self._at_own_size:
            return image
        side = self._pipeline_side()
        if tuple(image.shape[-2:]) == (side, side):
            return image
        import torch.nn.functional as F

        return F.interpolate(image[None].float(), size=(side, side), mode="bilinear", antialias=True,
                             align_corners=False)[0].clamp(0, 1)

    def _invert(self, batch: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        from ..diffusion import invert

        return invert(self.pipe, batch, num_steps=steps or self.inversion_steps)

    def _rotations_undone(self, image: torch.Tensor, latent_size, angles: list[float],
                          steps: Optional[int] = None) -> torch.Tensor:
        """Latents (len(angles), C, h, w) of the image rotated back by each angle, inverted as
        one batch, zero where the rotation brought in pixels from outside the frame."""
        height, width = image.shape[-2:]
        factor = width // latent_size[-1]
        undone = torch.cat([_undo(image[None], a, 1.0) if a else image[None].float() for a in angles])
        inside = torch.stack([_inside(height, width, a, 1.0, factor=factor) for a in angles])[:, None]
        return self._invert(undone, steps) * inside

    def _image_undo(self, image: torch.Tensor, latent_size, angle: float, zoom: float,
                    steps: Optional[int] = None) -> torch.Tensor:
        """Latents (1, C, h, w) of the image with a candidate transform undone on the image
        itself: rotated back, and for a zoom, shrunk to its original scale and inverted at that
        size (the DDIM inversion reads a mark best at the scale it was generated), the smaller
        latent placed at the centre of a zero latent of the full size."""
        if zoom == 1.0:
            return self._rotations_undone(image, latent_size, [angle], steps)
        height, width = image.shape[-2:]
        factor = width // latent_size[-1]
        undone = _undo(image[None], angle, 1.0) if angle else image[None]
        inside = _inside(height, width, angle, 1.0, factor=factor)
        # the shrunk latent must sit centred on the grid: sides in steps of 2 latent cells
        step = 2 * factor
        size = [max(step, round(n / zoom / step) * step) for n in (height, width)]
        import torch.nn.functional as F

        small = F.interpolate(undone, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        inner = self._invert(small, steps) * F.interpolate(inside[None, None].float(), size=[n // factor for n in size])[0, 0].round()
        full = torch.zeros(1, inner.shape[1], *latent_size)
        top, left = (latent_size[0] - inner.shape[-2]) // 2, (latent_size[1] - inner.shape[-1]) // 2
        full[..., top:top + inner.shape[-2], left:left + inner.shape[-1]] = inner
        return full
