"""Forgery by averaging: estimate a scheme's watermark from many marked images and stamp it on
clean ones, then measure how often those clean images verify as marked (false attribution).

The attacker holds N images marked with one key (e.g. scraped outputs of one service) but not
their clean originals. Estimators of the watermark signal (a (3, H, W) pattern):

- ``"residual"`` (the realistic attacker, default): ``mean_i(m_i - blur(m_i))``, the average
  high-frequency residual of the marked images (Gaussian blur of ``sigma`` pixels). Image
  content differs from image to image and its residuals average towards zero like 1/sqrt(N);
  a watermark component that repeats across images (the same key, the same positions) adds up
  coherently. Low-frequency parts of a mark are lost by this estimator.
- ``"paired"`` (an oracle upper bound, not a realistic attacker): ``mean_i(m_i - x_i)`` with
  the clean originals ``x_i``: the exact mean embedding residual.

The forged image is ``clip(x + scale * pattern)`` for a clean image ``x`` never marked; the
false-attribution rate is the fraction of forged images whose p-value against the key is below
``alpha`` (1e-3 by default). The same test on the unforged clean images gives the baseline
false-positive rate, and PSNR(forged, clean) says how visible the stamp is.

    python -m wmkit.eval.forgery -m dwtdct -m dwtdctsvd -m rivagan --n-estimate 32 --n-test 32
    wmkit eval -m dwtdct --forgery 32 ... (adds a "Forgery" section to the report)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from ..errors import ConfigError
from ..types import DEFAULT_ALPHA

ESTIMATORS = ("residual", "paired")
DEFAULT_SIGMA = 2.0


def high_pass(images: torch.Tensor, sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """images - GaussianBlur(images, sigma): the detail an averaging attacker keeps."""
    from kornia.filters import gaussian_blur2d

    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, min(images.shape[-2:]) - 1)
    size = 2 * radius + 1
    return images - gaussian_blur2d(images, (size, size), (sigma, sigma), border_type="reflect")


def estimate_watermark(marked: torch.Tensor, *, clean: Optional[torch.Tensor] = None, estimator: str = "residual",
                       sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """The watermark pattern (3, H, W) estimated from marked images (N, 3, H, W) of one size."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown forgery estimator '{estimator}'; choose {' or '.join(ESTIMATORS)}")
    if marked.ndim != 4 or len(marked) < 1:
        raise ConfigError(f"expected marked images (N, 3, H, W), got shape {tuple(marked.shape)}")
    if estimator == "paired":
        if clean is None or clean.shape != marked.shape:
            raise ConfigError("the paired estimator needs the clean originals, one per marked image")
        return (marked.float() - clean.float()).mean(0)
    return high_pass(marked.float(), sigma).mean(0)


def forge(clean: torch.Tensor, pattern: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """Clean images (N, 3, H, W) with the estimated pattern added (resized if the size differs)."""
    if pattern.shape[-2:] != clean.shape[-2:]:
        pattern = torch.nn.functional.interpolate(pattern[None], size=clean.shape[-2:], mode="bilinear", align_corners=False)[0]
    return (clean.float() + scale * pattern).clamp(0, 1)


@dataclass
class ForgeryResult:
    method: str
    estimator: str
    n_estimate: int
    n_test: int
    alpha: float
    scale: float
    false_attribution_rate: float  # forged clean images that verify as marked
    baseline_fpr: float  # the same test on the clean images without the stamp
    marked_tpr: float  # the marked images the pattern was estimated from (sanity check)
    forged_psnr: Optional[float]  # forged vs clean, dB
    pattern_rms: float  # on the [0, 1] scale

    def as_dict(self) -> dict:
        return asdict(self)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> Optional[float]:
    mse = float(((a - b) ** 2).mean())
    return None if mse == 0 else 10 * math.log10(1.0 / mse)


def _rate(results, alpha: float) -> float:
    return sum(r.p_value < alpha for r in results) / len(results)


def false_attribution(watermarker, key, marked: torch.Tensor, test_clean: torch.Tensor, *, clean: Optional[torch.Tensor] = None,
                      estimator: str = "residual", alpha: float = DEFAULT_ALPHA, scale: float = 1.0,
                      sigma: float = DEFAULT_SIGMA, batch_size: int = 8) -> ForgeryResult:
    """The averaging forgery of ``watermarker`` with ``key`` from given images (all of one size)."""
    pattern = estimate_watermark(marked, clean=clean, estimator=estimator, sigma=sigma)
    forged = forge(test_clean, pattern, scale=scale)

    def detect(images: torch.Tensor) -> list:
        out = []
        for i in range(0, len(images), batch_size):
            out += watermarker.detect(list(images[i : i + batch_size]), key)
        return out

    return ForgeryResult(
        method=watermarker.name, estimator=estimator, n_estimate=len(marked), n_test=len(test_clean), alpha=alpha,
        scale=scale, false_attribution_rate=_rate(detect(forged), alpha), baseline_fpr=_rate(detect(test_clean), alpha),
        marked_tpr=_rate(detect(marked), alpha), forged_psnr=_psnr(forged, test_clean.float()),
        pattern_rms=float(pattern.pow(2).mean().sqrt()),
    )


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """The image as ``size`` x ``size``: its shorter side resized to ``size`` (antialiased), the
    centre kept. The averaging forgery adds one pattern to images of one size."""
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    scale = size / min(height, width)
    if scale != 1.0:
        shape = [max(size, round(height * scale)), max(size, round(width * scale))]
        image = F.interpolate(image[None].float(), size=shape, mode="bilinear", antialias=scale < 1, align_corners=False)[0].clamp(0, 1)
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[:, top:top + size, left:left + size].float()


def forgery_on_images(watermarker, key, images: Sequence[torch.Tensor], *, n_estimate: int, n_test: int, size: int,
                      alpha: float = DEFAULT_ALPHA, estimator: str = "residual", scale: float = 1.0,
                      sigma: float = DEFAULT_SIGMA) -> ForgeryResult:
    """The averaging forgery of a post-hoc ``watermarker`` with ``key`` on given clean images
    (any sizes, squared by ``square``): the first ``n_estimate`` are marked to estimate the
    pattern, the next ``n_test`` are forged and tested. With fewer images than both need, they
    are split in halves (the result records the numbers used)."""
    if watermarker.marks_at_generation():
        raise ConfigError(f"'{watermarker.name}' marks at generation time; the averaging forgery covers post-hoc schemes")
    if n_estimate < 1 or n_test < 1:
        raise ConfigError("the forgery needs at least one image to estimate from and one to forge")
    if len(images) < 2:
        raise ConfigError(f"the forgery needs at least 2 images (one to estimate from, one to forge); got {len(images)}")
    if len(images) < n_estimate + n_test:
        n_estimate = n_test = len(images) // 2
    clean = torch.stack([square(image, size) for image in images[:n_estimate]])
    test = torch.stack([square(image, size) for image in images[n_estimate:n_estimate + n_test]])
    marked = torch.stack([watermarker.embed([image], key)[0] for image in clean])
    return false_attribution(watermarker, key, marked, test, clean=clean, estimator=estimator, alpha=alpha, scale=scale, sigma=sigma)


def forgery_rate(method: str, *, n_estimate: int = 32, n_test: int = 32, size: int = 256, seed: int = 0,
                 alpha: float = DEFAULT_ALPHA, estimator: str = "residual", scale: float = 1.0,
                 sigma: float = DEFAULT_SIGMA, key=None) -> ForgeryResult:
    """The averaging forgery of a registered post-hoc scheme on the offline evaluation photos
    (``python -m wmkit.eval.forgery``; ``wmkit eval --forgery`` uses the run's own images).

    ``n_estimate`` crops are marked with the key (seeded from ``seed``, or ``key``) to estimate
    the pattern; ``n_test`` other crops (another crop seed) are forged and tested.
    """
    from .. import data
    from ..keys import generate_key
    from ..registry import create
    from .harness import derive_seed

    if n_estimate < 1 or n_test < 1:
        raise ConfigError("the forgery needs at least one image to estimate from and one to forge")
    key = key if key is not None else generate_key(method, seed=derive_seed(seed, "key", method))
    images = data.crops(n_estimate, size=size, group="evaluation", seed=derive_seed(seed, "forgery-estimate") % 2**32) + \
        data.crops(n_test, size=size, group="evaluation", seed=derive_seed(seed, "forgery-test") % 2**32)
    return forgery_on_images(create(method), key, images, n_estimate=n_estimate, n_test=n_test, size=size,
                             alpha=alpha, estimator=estimator, scale=scale, sigma=sigma)


def markdown_section(results: Sequence[dict]) -> str:
    lines = [
        "## Forgery (averaging attack)",
        "",
        "The watermark pattern is estimated from images marked with the evaluation key (residual: the mean "
        "high-pass residual, what a real attacker can do; paired: the mean of marked minus clean, an oracle), "
        "added to clean images never marked, and those are tested against the key. False attribution: forged "
        "clean images with p < alpha; baseline: the same clean images without the stamp.",
        "",
        "| method | estimator | N estimate | N test | false attribution | baseline FPR | TPR marked | forged PSNR dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        psnr = "—" if r["forged_psnr"] is None else f"{r['forged_psnr']:.1f}"
        lines.append(
            f"| {r['method']} | {r['estimator']} | {r['n_estimate']} | {r['n_test']} | {r['false_attribution_rate']:.3f} | "
            f"{r['baseline_fpr']:.3f} | {r['marked_tpr']:.3f} | {psnr} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wmkit.eval.forgery", description="averaging forgery: false-attribution rate per scheme")
    p.add_argument("-m", "--method", dest="methods", action="append", required=True)
    p.add_argument("--n-estimate", type=int, default=32)
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--estimator", action="append", choices=ESTIMATORS, default=None, help="repeat for several (default: both)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = [
        forgery_rate(method, n_estimate=args.n_estimate, n_test=args.n_test, size=args.size, seed=args.seed,
                     alpha=args.alpha, estimator=estimator, scale=args.scale).as_dict()
        for method in args.methods
        for estimator in (args.estimator or list(ESTIMATORS))
    ]
    print(json.dumps(results, indent=2) if args.json else markdown_section(results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
