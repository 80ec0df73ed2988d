"""Measure a detector on unwatermarked images and fit its null (``wmkit calibrate``).

Attacked copies of the clean images are measured too (the ``calibration``
suite by default: JPEG, resizing, brightness, blur, crop), because verify is
run on attacked images and attacks move a detector's null: a null fitted on
pristine images alone would be too narrow for them. Each scheme's
``fit_null`` says what it fits (bit decoders: wmkit.calibration.BitNullModel;
score tests such as Tree-Ring: ScoreNullModel).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from . import BitNullModel, fit_bit_null
from ..errors import ConfigError, WmkitError


def _attacks(spec: str | Sequence | None):
    if spec is None or spec == "none":
        return []
    if isinstance(spec, str):
        from ..attacks import get_suite

        return get_suite(spec)
    return list(spec)


def attacked_variants(images: Sequence[torch.Tensor], *, attacks: Any = "calibration", seed: int = 0,
                      progress: Optional[bool] = None, min_pixels: int = 0, min_side: int = 0) -> Iterator[torch.Tensor]:
    """Each clean image, then its attacked copies that are still large enough for the scheme."""
    from ..progress import progress as progress_display

    attack_list = _attacks(attacks)
    generator = torch.Generator().manual_seed(seed)
    for image in progress_display(images, desc="calibrate", unit="img", enabled=progress):
        for variant in [image] + [attack(image[None], generator=generator)[0] for attack in attack_list]:
            _, height, width = variant.shape
            if height * width >= min_pixels and min(height, width) >= min_side:
                yield variant


def decode_for_calibration(wm, images: Sequence[torch.Tensor], *, attacks: Any = "calibration", seed: int = 0,
                           progress: Optional[bool] = None) -> np.ndarray:
    """Decoded bits of each clean image and of each attacked copy that is still large enough."""
    if wm.null_kind != "bits":
        raise ConfigError(f"'{wm.name}' is not a bit-based scheme; its calibration is not a bit null")
    variants = attacked_variants(images, attacks=attacks, seed=seed, progress=progress,
                                 min_pixels=wm.min_pixels, min_side=wm.min_side)
    return np.stack([wm.decode_bits([variant])[0] for variant in variants])


def calibrate_images(wm, images: Sequence[torch.Tensor], *, attacks: Any = "calibration", seed: int = 0,
                     progress: Optional[bool] = None, info: Optional[dict] = None) -> BitNullModel:
    bits = decode_for_calibration(wm, images, attacks=attacks, seed=seed, progress=progress)
    info = dict(info or {})
    info.setdefault("attacks", attacks if isinstance(attacks, str) or attacks is None else [a.describe() for a in attacks])
    info["num_source_images"] = len(images)
    return fit_bit_null(bits, method=wm.name, config=wm.config(), info=info)


def calibrate_paths(wm, inputs: Sequence[str], *, attacks: Any = "calibration", keys=None, max_pixels: int,
                    progress: Optional[bool] = None):
    """Load every readable image (reporting the others) and fit the scheme's null on them."""
    from ..imageio import iter_image_paths, load_image
    from ..progress import error_line

    images, failures = [], 0
    for path in iter_image_paths(inputs):
        try:
            images.append(load_image(path, max_pixels=max_pixels, min_pixels=wm.min_pixels, min_side=wm.min_side))
        except WmkitError as exc:
            failures += 1
            error_line(path, str(exc))
    if len(images) < 10:
        raise ConfigError(f"calibration needs at least 10 readable unwatermarked images, got {len(images)}")
    model = wm.fit_null(images, attacks=attacks, keys=keys, progress=progress, info={"source": [str(i) for i in inputs]})
    return model, failures
