"""Offline natural images for tests, demos and calibration (nothing is downloaded).

The bundled group: the photographs inside scikit-image and scikit-learn.
They are split by *source photo* into two disjoint groups so that anything
fitted on one group (shipped calibrations) is checked on the other:
``calibration`` and ``evaluation``. ``crops`` makes many distinct images from
them: random crops of random scale, resized to a square size.

The training corpus (``wmkit.data.corpus``: photographs and artwork from Debian's
wallpaper packages, built on demand, never committed), the procedural images
(``wmkit.data.procedural``) and the crop sampler every recipe reads
(``wmkit.data.sampler``) live beside this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..errors import ConfigError, MissingDependencyError

# (package, file) of each bundled photograph, by group
PHOTOS = {
    "calibration": [
        ("skimage", "coffee.png"), ("skimage", "chelsea.png"), ("skimage", "rocket.jpg"),
        ("skimage", "retina.jpg"), ("skimage", "camera.png"), ("skimage", "moon.png"),
        ("skimage", "brick.png"), ("skimage", "grass.png"), ("skimage", "coins.png"),
        ("skimage", "page.png"),
    ],
    "evaluation": [
        ("skimage", "astronaut.png"), ("skimage", "motorcycle_left.png"), ("skimage", "motorcycle_right.png"),
        ("skimage", "hubble_deep_field.jpg"), ("skimage", "ihc.png"), ("skimage", "gravel.png"),
        ("skimage", "clock_motion.png"), ("skimage", "text.png"),
        ("sklearn", "china.jpg"), ("sklearn", "flower.jpg"),
    ],
}


def _photo_path(package: str, name: str) -> Path:
    try:
        if package == "skimage":
            import skimage.data

            return Path(skimage.data.__file__).parent / name
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / name
    except ImportError:
        raise MissingDependencyError(
            f"the offline sample photos come from {package}: pip install scikit-image scikit-learn"
        ) from None


def photo_paths(group: str = "all") -> list[Path]:
    if group == "all":
        entries = PHOTOS["calibration"] + PHOTOS["evaluation"]
    elif group in PHOTOS:
        entries = PHOTOS[group]
    else:
        raise ConfigError(f"unknown photo group '{group}' (calibration, evaluation or all)")
    return [_photo_path(*entry) for entry in entries]


def load_photos(group: str = "all") -> list[torch.Tensor]:
    from ..imageio import load_image

    return [load_image(p) for p in photo_paths(group)]


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # quantise like a saved file would be, so crops behave like real images
    return resized[0].clamp(0, 1).mul(255).round().div(255)


def crops(
    n: int,
    *,
    size: int = 256,
    group: str = "all",
    seed: int = 0,
    min_scale: float = 0.35,
    photos: Optional[list[torch.Tensor]] = None,
) -> list[torch.Tensor]:
    """``n`` square images of side ``size``: crops covering ``min_scale``..1 of
    the shorter side of a photo, cycling through the group's photos."""
    return list(iter_crops(n, size=size, group=group, seed=seed, min_scale=min_scale, photos=photos))


def iter_crops(n, *, size=256, group="all", seed=0, min_scale=0.35, photos=None) -> Iterator[torch.Tensor]:
    photos = photos if photos is not None else load_photos(group)
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        _, height, width = photo.shape
        side = int(min(height, width) * (1.0 if i < len(photos) else rng.uniform(min_scale, 1.0)))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        yield _resize(photo[:, top : top + side, left : left + side], size)


def copy_photos(group: str, folder: Path) -> list[Path]:
    """Copy a group's photo files into ``folder`` (for a training machine without scikit-image:
    the recipes read the folder with --images / --images-dir). Refuses to overwrite."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in photo_paths(group):
        target = folder / source.name
        if target.exists():
            raise ConfigError(f"{target} exists already: not overwritten")
        shutil.copyfile(source, target)
        copied.append(target)
    return copied

