"""Value-metric attacks: blur, noise and colour changes (Kornia ops, all differentiable).

The colour factors follow Pillow's ImageEnhance conventions (1 = unchanged, 0 = black / grey /
flat); strength s -> factor 1 + s for brightness, contrast and saturation (strength 1 doubles),
and 1 + 2 s for sharpness, whose effect is milder per unit.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
    sharpness,
)
from kornia.filters import gaussian_blur2d

from ..registry import register_attack
from .base import Attack, NaturalParam, Params, random_seeds


@register_attack("gaussian_blur")
class GaussianBlur(Attack):
    """Gaussian blur with standard deviation ``sigma`` in pixels; strength s -> sigma = 3 s.

    The kernel spans +-3 sigma (odd size 2*ceil(3 sigma) + 1), capped by the image size,
    with reflected borders.
    """

    param = NaturalParam(
        "sigma", float, low=0.0, high=10.0, default=1.0, at_zero=0.0, at_one=3.0, identity=0.0, unit="pixels",
    )

    def __init__(self, *, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = self._validated(sigma)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        sigmas = params["sigma"]
        max_radius = min(images.shape[-2:]) - 1  # reflect padding must stay inside the image
        out = images.clone()
        # Blur each distinct sigma as one group: its kernel size then depends on that sigma
        # only, so a batch gives the same result as single images.
        for sigma in torch.unique(sigmas).tolist():
            radius = min(max_radius, math.ceil(3 * sigma))
            if sigma <= 0 or radius < 1:
                continue
            chosen = sigmas == sigma
            size = 2 * radius + 1
            out[chosen] = gaussian_blur2d(images[chosen], (size, size), (sigma, sigma), border_type="reflect")
        return out


@register_attack("gaussian_noise")
class GaussianNoise(Attack):
    """Add white Gaussian noise of standard deviation ``std`` (on the [0, 1] scale), then clamp.

    Strength s -> std = 0.1 s. Params: "std" and "seed", one int64 seed per image from which the
    noise field is regenerated, so the parameter dict stays small and replay stays exact.
    """

    param = NaturalParam(
        "std", float, low=0.0, high=1.0, default=0.05, at_zero=0.0, at_one=0.1, identity=0.0, unit="on the [0, 1] scale",
    )
    random_keys = ("seed",)
    stochastic = True

    def __init__(self, *, std: float = 0.05) -> None:
        super().__init__()
        self.std = self._validated(std)

    def sample_params(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> Params:
        params = super().sample_params(images, generator)
        params["seed"] = random_seeds(images.shape[0], generator, images.device)
        return params

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        noise = torch.empty_like(images)
        for i, seed in enumerate(params["seed"].tolist()):
            field = torch.Generator(device=images.device).manual_seed(seed)
            noise[i] = torch.randn(images.shape[1:], generator=field, device=images.device, dtype=images.dtype)
        return images + params["std"].to(images.dtype).view(-1, 1, 1, 1) * noise


def _factor_param(default: float, at_one: float) -> NaturalParam:
    return NaturalParam(
        "factor", float, low=0.0, high=10.0, default=default, at_zero=1.0, at_one=at_one, identity=1.0,
        unit="1 = unchanged",
    )


@register_attack("brightness")
class Brightness(Attack):
    """Multiply every pixel by ``factor`` (1.5 -> 50% brighter, 0.5 darker); s -> factor 1 + s."""

    param = _factor_param(default=1.5, at_one=2.0)

    def __init__(self, *, factor: float = 1.5) -> None:
        super().__init__()
        self.factor = self._validated(factor)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return adjust_brightness_accumulative(images, params["factor"].to(images.dtype))


@register_attack("contrast")
class Contrast(Attack):
    """Blend with each image's mean grey level, as Pillow does; s -> factor 1 + s."""

    param = _factor_param(default=1.5, at_one=2.0)

    def __init__(self, *, factor: float = 1.5) -> None:
        super().__init__()
        self.factor = self._validated(factor)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return adjust_contrast_with_mean_subtraction(images, params["factor"].to(images.dtype))


@register_attack("saturation")
class Saturation(Attack):
    """Blend with the greyscale image, as Pillow does (0 = grey); s -> factor 1 + s.

    Kornia's plain adjust_saturation scales HSV saturation instead, whose factor 0 is not grey.
    """

    param = _factor_param(default=1.5, at_one=2.0)
    channels = (1, 3)

    def __init__(self, *, factor: float = 1.5) -> None:
        super().__init__()
        self.factor = self._validated(factor)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return adjust_saturation_with_gray_subtraction(images, params["factor"].to(images.dtype))


@register_attack("sharpness")
class Sharpness(Attack):
    """Pillow-style sharpening: blend with a 3x3 smoothed copy (0 = smoothed); s -> factor 1 + 2 s."""

    param = _factor_param(default=2.0, at_one=3.0)

    def __init__(self, *, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = self._validated(factor)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return sharpness(images, params["factor"].to(images.dtype))


@register_attack("hue")
class Hue(Attack):
    """Rotate the hue by ``degrees`` (HSV hue angle; +-180 gives the complementary colours).

    Given in degrees for readability; Kornia takes radians. Strength s -> degrees = 60 s.
    """

    param = NaturalParam(
        "degrees", float, low=-180.0, high=180.0, default=30.0, at_zero=0.0, at_one=60.0, identity=0.0,
        unit="degrees of hue",
    )
    channels = (3,)

    def __init__(self, *, degrees: float = 30.0) -> None:
        super().__init__()
        self.degrees = self._validated(degrees)

    def _apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return adjust_hue(images, torch.deg2rad(params["degrees"]).to(images.dtype))
