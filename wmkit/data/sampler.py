"""Training crops for every recipe in ``wmkit/train/``, from one place.

``training_crops`` draws ``count`` square crops of side ``size`` from, in order of precedence:
a corpus folder (``python -m wmkit.data corpus build``) or a packed training set
(``corpus pack``), a folder of image files, or the bundled *calibration* photos; at several
scales (a crop covers ``min_scale``..1 of a photo's shorter side), flipped at random, with a
small colour jitter, and with a share of procedural images (``procedural_share``) mixed in.
Same arguments, same crops, bit for bit.

``pack_training_set`` writes crops of a corpus as high-quality JPEG files under a size cap
(60 MiB by default), the set a GPU machine is handed (it reads it with ``--corpus PACK``).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

PACK_FORMAT = "wmkit-corpus-pack"
MAX_SIDE = 1536  # photos are shrunk to this longer side on load: 5120 px wallpapers would take 180 MB each as floats


def _shrink(image: torch.Tensor, max_side: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def load_sources(corpus: Optional[str | os.PathLike] = None, images_dir: Optional[str | os.PathLike] = None, *,
                 split: str = "train", group: str = "calibration", max_side: int = MAX_SIDE,
                 bundled: bool = True) -> list[torch.Tensor]:
    """The photos crops are cut from, as uint8 tensors (3, H, W): a corpus's split, a packed set,
    every image under ``images_dir``, or a bundled photo group."""
    from ..imageio import iter_image_paths, load_image

    if corpus is not None:
        folder = Path(corpus)
        if (folder / "pack.json").is_file():
            paths = [folder / name for name in json.loads((folder / "pack.json").read_text())["files"]]
        else:
            from .corpus import corpus_paths

            paths = corpus_paths(folder, split, bundled=bundled)
    elif images_dir is not None:
        paths = list(iter_image_paths([images_dir]))
    else:
        from . import photo_paths

        paths = photo_paths(group)
    if not paths:
        raise ConfigError(f"no training images found in {corpus or images_dir or group}")
    return [_shrink(load_image(p), max_side).mul(255).round().to(torch.uint8) for p in paths]


def _jitter(image: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by up to +-strength."""
    b, c, s = (1 + rng.uniform(-strength, strength, 3)).tolist()
    mean = image.mean()
    image = (image - mean) * c + mean * b
    grey = image.mean(0, keepdim=True)
    return ((image - grey) * s + grey).clamp(0, 1)


def training_crops(count: int, size: int, *, seed: int = 0, corpus: Optional[str | os.PathLike] = None,
                   images_dir: Optional[str | os.PathLike] = None, group: str = "calibration", split: str = "train",
                   min_scale: float = 0.12, procedural_share: float = 0.0, flip: bool = True, jitter: float = 0.0,
                   sources: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """(count, 3, size, size) float crops in [0, 1], quantised to 8 bits like saved files.

    Every source photo gives one full-view crop before the random ones (each photo is seen at
    its whole extent at least once); ``sources`` skips loading (uint8 or float tensors)."""
    if not 0 <= procedural_share <= 1:
        raise ConfigError(f"procedural_share must be within [0, 1], got {procedural_share}")
    if not 0 < min_scale <= 1:
        raise ConfigError(f"min_scale must be within (0, 1], got {min_scale}")
    from .procedural import procedural_image

    if sources is None and procedural_share < 1:
        sources = load_sources(corpus, images_dir, split=split, group=group)
    rng = np.random.default_rng(seed)
    out = torch.empty(count, 3, size, size)
    for i in range(count):
        if procedural_share and rng.random() < procedural_share:
            crop = procedural_image(size, int(rng.integers(2**31)))
        else:
            photo = sources[i % len(sources)]
            photo = photo.float() / 255 if photo.dtype == torch.uint8 else photo
            _, height, width = photo.shape
            side = int(min(height, width) * (1.0 if i < len(sources) else rng.uniform(min_scale, 1.0)))
            side = max(side, 1)
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            crop = F.interpolate(photo[None, :, top:top + side, left:left + side], size=(size, size), mode="bilinear",
                                 antialias=side > size, align_corners=False)[0]
            if flip and rng.random() < 0.5:
                crop = crop.flip(-1)
            if jitter:
                crop = _jitter(crop, rng, jitter)
        out[i] = crop.clamp(0, 1).mul(255).round().div(255)
    return out


def pack_training_set(corpus: str | os.PathLike, out: str | os.PathLike, *, size: int = 256, count: int = 4000,
                      max_mib: float = 60.0, quality: int = 95, seed: int = 0, split: str = "train",
                      min_scale: float = 0.12, progress: bool = True) -> dict:
    """Write up to ``count`` crops of the corpus split as JPEG files in ``out`` plus ``pack.json``,
    stopping before the files would pass ``max_mib``. Refuses an ``out`` that holds a pack already."""
    from PIL import Image
    from ..imageio import to_uint8
    from ..progress import progress as progress_display

    out = Path(out)
    if (out / "pack.json").exists():
        raise ConfigError(f"{out} holds a packed set already (pack.json): remove it or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    sources = load_sources(corpus, split=split)
    budget, used, files = max_mib * 2**20, 0, []
    chunk = 256
    bar = progress_display(total=count, desc="pack", unit="crop", enabled=None if progress else False)
    start = 0
    while start < count and used <= budget:
        # chunks drawn with derived seeds: a pack of 1000 crops is the first 1000 of a pack of 4000
        crops = training_crops(min(chunk, count - start), size, seed=seed * 100_003 + start, sources=sources,
                               min_scale=min_scale)
        for j, crop in enumerate(crops):
            name = f"crop-{start + j:06d}.jpg"
            Image.fromarray(to_uint8(crop)).save(out / name, format="JPEG", quality=quality)
            used += (out / name).stat().st_size
            if used > budget:  # this one would pass the cap
                (out / name).unlink()
                break
            files.append(name)
            bar.update(1)
        start += len(crops)
    bar.close()
    used = sum((out / name).stat().st_size for name in files)
    pack = {"format": PACK_FORMAT, "corpus": str(corpus), "split": split, "size": size, "quality": quality,
            "seed": seed, "min_scale": min_scale, "mib": round(used / 2**20, 2), "files": files}
    with tempfile.NamedTemporaryFile("w", dir=out, prefix=".pack.json.", delete=False) as f:
        json.dump(pack, f, indent=1)
    os.replace(f.name, out / "pack.json")
    return pack


def data_provenance(corpus: Optional[str | os.PathLike] = None, images_dir: Optional[str | os.PathLike] = None,
                    procedural_share: float = 0.0, group: str = "calibration") -> dict:
    """What a recipe trained on, for its provenance: the corpus manifest's (or pack's) sha256
    names the exact image set."""
    import hashlib

    if corpus is not None:
        folder = Path(corpus)
        index = folder / "pack.json" if (folder / "pack.json").is_file() else folder / "manifest.json"
        described = {"corpus": str(folder), "index": index.name,
                     "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest() if index.is_file() else None}
    elif images_dir is not None:
        described = {"images_dir": str(images_dir)}
    else:
        described = {"bundled_group": group}
    return {**described, "procedural_share": procedural_share}
