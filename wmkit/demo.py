"""`wmkit demo`: the main job end to end on offline sample photos.

For every post-hoc scheme: make a key, mark the photos, attack them, verify,
and print one table (detection rate at alpha, median p-value, bit accuracy,
PSNR), plus the false-positive rate on the same photos unmarked.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

DEMO_ATTACKS = ["none", "jpeg:75", "center_crop:0.75", "brightness:1.3", "gaussian_blur:1.0", "gaussian_noise:0.03"]
DEMO_ALPHA = 1e-3


def _attack(spec: str):
    from .attacks import parse_attack

    return None if spec == "none" else parse_attack(spec)


def _print_rows(stream, method, wm, key, clean, marked, quality, generator):
    rows = [("clean (FPR)", clean, None)] + [(spec, marked, _attack(spec)) for spec in DEMO_ATTACKS]
    for label, batch, attack in rows:
        attacked = batch if attack is None else [attack(img[None], generator=generator)[0] for img in batch]
        usable = [img for img in attacked if img.shape[1] * img.shape[2] >= wm.min_pixels]
        if not usable:
            print(f"{method:<16} {label:<18} {'(images too small for this method)':>36}", file=stream)
            continue
        results = wm.detect(usable, key)
        p = np.array([r.p_value for r in results])
        acc = [r.bit_accuracy for r in results if r.bit_accuracy is not None]
        shown_acc = f"{np.mean(acc):8.3f}" if acc else f"{'-':>8}"
        shown_psnr = f"{quality:8.1f}" if label == "none" else f"{'':>8}"
        print(f"{method:<16} {label:<18} {np.mean(p < DEMO_ALPHA):8.0%} {np.median(p):10.2e} {shown_acc} {shown_psnr}", file=stream)


def _generation_time_images(method, key, num_images, pipe):
    """Marked generations and their unmarked twins (same prompts and seeds)."""
    from .diffusion import DEFAULT_PROMPTS
    from .registry import create
    from .wrapping import wrap

    wm = create(method, pipeline=pipe)
    prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(num_images)]
    seeds = lambda: [torch.Generator().manual_seed(s) for s in range(num_images)]
    clean = pipe(prompts, num_inference_steps=25, generator=seeds(), output_type="pt").images
    marked_pipe = wrap(pipe, wm, key)
    try:
        marked = marked_pipe(prompts, num_inference_steps=25, generator=seeds(), output_type="pt").images
    finally:
        marked_pipe.unwrap()  # a scheme may patch the shared pipeline (Stable Signature swaps its decoder)
    return wm, list(clean.float().clamp(0, 1)), list(marked.float().clamp(0, 1))


def run_demo(*, num_images: int = 6, size: int = 256, output: Optional[str] = None, methods: Optional[list[str]] = None,
             stream=sys.stdout) -> int:
    from . import data
    from .errors import WeightsError
    from .eval.metrics import psnr
    from .imageio import save_image
    from .keys import generate_key
    from .registry import WATERMARKERS, create

    photos = data.crops(num_images, size=size, group="evaluation", seed=0)
    methods = list(methods) if methods else WATERMARKERS.names()
    for method in methods:
        WATERMARKERS.get(method)  # an unknown name is a usage error before any work
    print(f"wmkit demo: {len(photos)} offline photos ({size}x{size}) for post-hoc schemes, {num_images} generations "
          f"of the tiny pipeline for generation-time schemes; decision at alpha={DEMO_ALPHA:g}", file=stream)
    header = f"{'method':<16} {'attack':<18} {'detected':>8} {'median p':>10} {'bit acc':>8} {'PSNR dB':>8}"
    print(header, file=stream)
    print("-" * len(header), file=stream)
    generator = torch.Generator().manual_seed(0)
    pipe = None
    for method in methods:
        start = time.perf_counter()
        key = generate_key(method, seed=2024)
        if WATERMARKERS.get(method).generation_time:
            try:
                if pipe is None:
                    from .diffusion import load_pipeline

                    pipe = load_pipeline("tiny")
            except WeightsError as exc:
                print(f"{method:<16} not run: {exc}", file=stream)
                continue
            wm, clean, marked = _generation_time_images(method, key, num_images, pipe)
        else:
            wm = create(method)
            missing = getattr(wm, "missing_default_model", lambda: None)()
            if missing:
                print(f"{method:<16} not run: {missing}", file=stream)
                continue
            clean, marked = photos, wm.embed(photos, key)
        # quality against the unmarked twin: the same photo, or the same prompt and seed
        quality = float(np.mean([psnr(a, b) for a, b in zip(clean, marked)]))
        if output:
            for i, image in enumerate(marked):
                save_image(image, Path(output) / method / f"{i:03d}.png", overwrite=True)
        _print_rows(stream, method, wm, key, clean, marked, quality, generator)
        print(f"{'':<16} ({time.perf_counter() - start:.1f} s)", file=stream)
    print("p-values use the shipped null calibration where one exists (see `wmkit verify --help`).", file=stream)
    return 0
