"""Fit the shipped Tree-Ring null calibration for the tiny pipeline (weights/calibration/).

    python -m wmkit.train.tree_ring_calibration [--generations 60] [--photos 40] [--overwrite]

Unwatermarked images: generations of the tiny pipeline (seeds 0..N-1, prompts
from the training labels; the benchmark uses seeds from 10000 on) and crops of
the *calibration* photo group, each clean and through the `calibration` attack
suite, inverted with the default settings, scored against 4 seeded keys.
"""
from __future__ import annotations

import argparse
import time

import torch

from .. import data
from ..calibration import shipped_score_calibration_path
from ..diffusion import load_pipeline
from ..registry import create
from .tiny_ldm import photo_label

PROMPTS = [photo_label(n) for n in ["coffee", "chelsea", "rocket", "retina", "camera", "moon", "brick", "grass", "coins", "page"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=80)
    parser.add_argument("--photos", type=int, default=0, help="photos pooled in (default none: the null of generations differs)")
    parser.add_argument("--attacks", default="calibration")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    pipe = load_pipeline("tiny")
    start = time.perf_counter()
    images = [
        pipe(PROMPTS[i % len(PROMPTS)], num_inference_steps=25, generator=torch.Generator().manual_seed(i),
             output_type="pt").images[0].float().clamp(0, 1)
        for i in range(args.generations)
    ]
    images += data.crops(args.photos, size=256, group="calibration", seed=3)
    tr = create("tree_ring", pipeline=pipe, calibration=None)
    if tr.model_name != "tiny":
        raise RuntimeError(f"expected the shipped tiny pipeline, got {tr.model_name}")
    model = tr.fit_null(images, attacks=args.attacks, progress=True, info={
        "source": f"{args.generations} tiny-pipeline generations (seeds 0..) + {args.photos} calibration-group photo crops",
        "recipe": "python -m wmkit.train.tree_ring_calibration"})
    path = model.save(shipped_score_calibration_path(tr), overwrite=args.overwrite)
    print(f"{model.info['num_images']} scores in {time.perf_counter() - start:.0f} s -> {path} "
          f"(null z mean {model.info['z_mean']:.2f}, sd {model.info['z_sd']:.2f})")


if __name__ == "__main__":
    main()
