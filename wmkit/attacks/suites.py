"""Named lists of attack specs, so evaluations can say "--attacks standard".

Suites hold spec strings rather than instances: they print, diff and serialise well, and
``get_suite`` builds fresh attacks. The differentiable JPEG surrogate ("jpeg_diff") is a
training tool, so the benchmark suites use the real codecs instead.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Attack
from .compose import parse_attack

# Classical attacks that have a meaningful range of strengths (hflip is on/off only).
_GRADED = [
    "center_crop", "random_crop", "resize", "rotate", "perspective",
    "jpeg", "webp", "gaussian_blur", "gaussian_noise",
    "brightness", "contrast", "saturation", "hue", "sharpness",
]
STRENGTH_LEVELS = (0.25, 0.5, 0.75, 1.0)
# Attacks that run a diffusion model (or its VAE); the "generative" suite.
GENERATIVE = ["regen", "rinse", "vae_regen", "paraphrase", "adv_embed"]
GENERATIVE_LEVELS = (0.25, 0.5, 1.0)

SUITES: dict[str, list[str]] = {
    # No attack: evaluations still score the clean images, so nothing is added here.
    "none": [],
    "quick": ["jpeg:75", "center_crop:0.75", "gaussian_blur", "brightness:1.5", "gaussian_noise"],
    # Every classical attack once, at a moderate setting (roughly strength 0.3 - 0.7).
    "standard": [
        "center_crop:0.5", "random_crop:0.5", "resize:0.5", "rotate:15", "hflip", "perspective:0.3",
        "jpeg:50", "webp:50", "gaussian_blur:1", "gaussian_noise:0.05",
        "brightness:1.5", "contrast:1.5", "saturation:1.5", "hue:30", "sharpness:2",
    ],
    # Mild, common edits applied to clean images when fitting a detector's null distribution
    # (wmkit.calibration.measure), so the null also covers re-encoded, resized and cropped images.
    "calibration": [
        "jpeg:50", "jpeg:80", "resize:0.75", "brightness:1.3", "gaussian_blur:1", "center_crop:0.75",
    ],
    # Robustness curves: each graded attack at four strengths.
    "strengths": [f"{name}@{level}" for name in _GRADED for level in STRENGTH_LEVELS] + ["hflip@1"],
    # Generative and adversarial attacks (they need a diffusion pipeline: `--pipeline`, default
    # the shipped tiny one), each at three strengths.
    "generative": [f"{name}@{level}" for name in GENERATIVE for level in GENERATIVE_LEVELS],
}


def get_suite(name: str, *, pipeline: Any = None) -> list[Attack]:
    """Fresh attack instances for a named suite; ``pipeline`` goes to generative attacks."""
    if name not in SUITES:
        raise ConfigError(f"unknown attack suite '{name}'; available: {', '.join(SUITES)}")
    return [parse_attack(spec, pipeline=pipeline) for spec in SUITES[name]]
