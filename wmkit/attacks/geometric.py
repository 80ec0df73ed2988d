"""Geometric attacks: crops, resize, rotation, flip, perspective (Kornia where it has the op).

Warps fill uncovered pixels with black, as the common benchmarks (WAVES, WatermarkAttacker) do.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from kornia.geometry.transform import get_perspective_transform, hflip, resize, rotate, warp_perspective

from ..errors import ConfigError
from ..registry import register_attack
from .base import Attack, NaturalParam, Params, check_bool, random_uniform


def _scaled(length: int, factor: float) -> int:
    """Round length * factor to whole pixels, keeping at least one."""
    return max(1, int(math.floor(length * factor + 0.5)))


def _stack_same_size(images: list[torch.Tensor], attack: str) -> torch.Tensor:
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        raise ConfigError(
            f"{attack}: per-image parameters give different output sizes {sorted(sizes)}, "
            "which cannot form one batch; use equal parameters for the batch"
        )
    return torch.cat(images, dim=0)


class _Crop(Attack):
    """Shared crop logic; the position is a fraction of the slack (0 = top/left, 1 = bottom/right)."""

    param = NaturalParam(
        "area", float, low=0.0, high=1.0, low_open=True, default=0.5,
        at_zero=1.0, at_one=0.25, identity=1.0, unit="fraction of the area kept",
    )
    options = {"resize_back": True}

    def __init__(self, *, area: float = 0.5, resize_back: bool = True) -> None:
        super().__init__()
        self.area = self._validated(area)
        # Resizing back keeps batch shapes fixed, which detectors and metrics expect.
        self.resize_back = check_bool(resize_back, f"{self.name}: resize_back")

    def _offsets(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        height, width = images.shape[-2:]
        offset_y, offset_x = self._offsets(params)
        crops = []
        for i in range(images.shape[0]):
            # Same fraction of each side, so the kept area is `area` and the aspect ratio stays.
            side = math.sqrt(float(params["area"][i]))
            h, w = min(height, _scaled(height, side)), min(width, _scaled(width, side))
            top = int(math.floor(float(offset_y[i]) * (height - h) + 0.5))
            left = int(math.floor(float(offset_x[i]) * (width - w) + 0.5))
            crop = images[i : i + 1, :, top : top + h, left : left + w]
            if self.resize_back and (h, w) != (height, width):
                crop = resize(crop, (height, width), interpolation="bilinear", align_corners=False)
            crops.append(crop)
        return _stack_same_size(crops, self.name)


@register_attack("center_crop")
class CenterCrop(_Crop):
    """Keep the central ``area`` fraction of the image (0.5: each side * sqrt(0.5)).

    Strength s -> area = 1 - 0.75 s (strength 1 keeps a quarter). With ``resize_back``
    (default) the crop is resized bilinearly to the input size; otherwise the output is smaller.
    """

    def _offsets(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        half = torch.full_like(params["area"], 0.5)
        return half, half


@register_attack("random_crop")
class RandomCrop(_Crop):
    """Like center_crop, at a uniformly random position drawn from the generator.

    Params: "area", "offset_y", "offset_x" (the latter in [0, 1] of the free margin).
    """

    random_keys = ("offset_y", "offset_x")
    stochastic = True

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        params = super().sample_params(images, generator)
        offsets = random_uniform((images.shape[0], 2), generator, images.device)
        params["offset_y"], params["offset_x"] = offsets[:, 0], offsets[:, 1]
        return params

    def _offsets(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return params["offset_y"], params["offset_x"]


@register_attack("resize")
class Resize(Attack):
    """Rescale both sides by ``scale`` and keep the new size (not resized back).

    Keeping the size is the point: the detector has to cope with the resolution change,
    as it would with a re-uploaded thumbnail. Downscaling is antialiased, like Pillow.
    Strength s -> scale = 1 - 0.75 s (strength 1 is a quarter of each side).
    """

    param = NaturalParam(
        "scale", float, low=0.0, high=4.0, low_open=True, default=0.5,
        at_zero=1.0, at_one=0.25, identity=1.0, unit="factor on each side",
    )

    def __init__(self, *, scale: float = 0.5) -> None:
        super().__init__()
        self.scale = self._validated(scale)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        height, width = images.shape[-2:]
        out = []
        for i in range(images.shape[0]):
            factor = float(params["scale"][i])
            size = (_scaled(height, factor), _scaled(width, factor))
            image = images[i : i + 1]
            if size != (height, width):
                image = resize(image, size, interpolation="bilinear", align_corners=False, antialias=factor < 1)
            out.append(image)
        return _stack_same_size(out, self.name)


@register_attack("rotate")
class Rotate(Attack):
    """Rotate by ``degrees`` counter-clockwise about the centre, same size, black corners.

    Strength s -> degrees = 45 s.
    """

    param = NaturalParam(
        "degrees", float, low=-180.0, high=180.0, default=15.0,
        at_zero=0.0, at_one=45.0, identity=0.0, unit="degrees, counter-clockwise",
    )

    def __init__(self, *, degrees: float = 15.0) -> None:
        super().__init__()
        self.degrees = self._validated(degrees)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        angle = params["degrees"].to(images.dtype)
        return rotate(images, angle, mode="bilinear", padding_mode="zeros", align_corners=True)


@register_attack("hflip")
class HorizontalFlip(Attack):
    """Mirror left-right when ``flip`` is true. Strength s -> flip = (s >= 0.5)."""

    param = NaturalParam("flip", bool, low=0, high=1, default=True, at_zero=False, at_one=True, identity=False)

    def __init__(self, *, flip: bool = True) -> None:
        super().__init__()
        self.flip = self._validated(flip)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        flip = params["flip"].bool().view(-1, 1, 1, 1)
        return torch.where(flip, hflip(images), images)


@register_attack("perspective")
class Perspective(Attack):
    """Move each corner inwards by a random fraction (up to ``distortion``) of the half size.

    Same idea as Kornia's RandomPerspective ``distortion_scale``; the output keeps its size
    with black borders. Params: "distortion" and "corners" (B, 4, 2) uniform in [0, 1], the
    per-corner (x, y) fractions of the maximum displacement, corners in the order top-left,
    top-right, bottom-right, bottom-left. Strength s -> distortion = 0.5 s.
    """

    param = NaturalParam(
        "distortion", float, low=0.0, high=0.9, default=0.3,
        at_zero=0.0, at_one=0.5, identity=0.0, unit="fraction of the half size",
    )
    random_keys = ("corners",)
    stochastic = True

    def __init__(self, *, distortion: float = 0.3) -> None:
        super().__init__()
        self.distortion = self._validated(distortion)

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        params = super().sample_params(images, generator)
        params["corners"] = random_uniform((images.shape[0], 4, 2), generator, images.device)
        return params

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        batch, _, height, width = images.shape
        kwargs = {"device": images.device, "dtype": images.dtype}
        source = torch.tensor([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], **kwargs)
        inwards = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], **kwargs)
        half = torch.tensor([(width - 1) / 2, (height - 1) / 2], **kwargs)
        reach = params["distortion"].to(images.dtype).view(-1, 1, 1) * half
        target = source + inwards * params["corners"].to(images.dtype) * reach
        source = source.expand(batch, 4, 2)
        matrix = get_perspective_transform(source, target)
        return warp_perspective(images, matrix, (height, width), mode="bilinear", padding_mode="zeros", align_corners=True)
