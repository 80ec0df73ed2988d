"""`wmkit demo`: the main job end to end, on offline sample photos, in a few minutes.

For every registered scheme: a key, marked images (the offline evaluation photos for
post-hoc schemes, generations of the tiny pipeline for generation-time ones), a few
attacks, verification; one table on stdout (detection rate at alpha, median p-value, bit
accuracy, PSNR), the false-positive rate on the same images unmarked, and the heatmap of
it all (``heatmap.png``) in the output folder with the marked images and ``demo.json``.

The keys are *public demo keys* (``DEMO_KEY_SEED``): anyone can make them, so they must
never mark anything for real. Stable Signature's decoder for its demo key ships with the
weights (``weights/demo-decoders``), so the demo need not fine-tune one (about 3 minutes
on 2 CPU cores); a key of your own is fine-tuned on first use. ``--full`` is the longer
tour: more images and harder attacks.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

DEMO_ATTACKS = ["jpeg:75", "center_crop:0.75", "brightness:1.3", "gaussian_blur:1.0", "gaussian_noise:0.03"]
FULL_EXTRA_ATTACKS = ["jpeg:50", "resize:0.5", "rotate:10", "center_crop:0.5"]
from .types import DEFAULT_ALPHA as DEMO_ALPHA
DEMO_IMAGES, FULL_IMAGES = 3, 8
DEMO_KEY_SEED = 2024  # public: `generate_key(method, seed=2024)`; never for real marks
DEMO_MARKER = "demo.json"  # what makes a folder a demo output folder that a new demo may refill
GENERATION_STEPS = 25


def _attack(spec: str):
    from .attacks import parse_attack

    return None if spec == "none" else parse_attack(spec)


def _rows(wm, key, clean, marked, attacks, generator, desc: str) -> dict:
    """{label: (detection rate, median p, mean bit accuracy or None, images read)} for the
    unmarked images (label 'unmarked') and the marked ones under each attack."""
    from .progress import progress

    rows = {}
    plan = [("unmarked", clean, None), ("none", marked, None)] + [(spec, marked, _attack(spec)) for spec in attacks]
    for label, batch, attack in progress(plan, desc=desc, unit="row"):
        attacked = batch if attack is None else [attack(img[None], generator=generator)[0] for img in batch]
        usable = [img for img in attacked if img.shape[1] * img.shape[2] >= wm.min_pixels and min(img.shape[1:]) >= wm.min_side]
        if not usable:
            rows[label] = None
            continue
        results = wm.detect(usable, key)
        p = np.array([r.p_value for r in results])
        acc = [r.bit_accuracy for r in results if r.bit_accuracy is not None]
        rows[label] = (float(np.mean(p < DEMO_ALPHA)), float(np.median(p)), float(np.mean(acc)) if acc else None, len(usable))
    return rows


def _print_rows(stream, method: str, rows: dict, quality: float, seconds: float) -> None:
    for label, row in rows.items():
        shown = "unmarked (FPR)" if label == "unmarked" else label
        if row is None:
            print(f"{method:<16} {shown:<18} {'(images too small for this method)':>36}", file=stream)
            continue
        rate, median_p, acc, _ = row
        shown_acc = f"{acc:8.3f}" if acc is not None else f"{'-':>8}"
        shown_psnr = f"{quality:8.1f}" if label == "none" else f"{'':>8}"
        print(f"{method:<16} {shown:<18} {rate:8.0%} {median_p:10.2e} {shown_acc} {shown_psnr}", file=stream)
    print(f"{'':<16} ({seconds:.1f} s)", file=stream, flush=True)


class _Generations:
    """Generations of the tiny pipeline for the generation-time schemes; the unmarked twins
    (same prompts and seeds) are made once and shared by every scheme."""

    def __init__(self, num_images: int):
        self.num_images = num_images
        self.pipe = None
        self._clean = None

    def _prompts_and_seeds(self):
        from .diffusion import DEFAULT_PROMPTS

        prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(self.num_images)]
        return prompts, [torch.Generator().manual_seed(s) for s in range(self.num_images)]

    def load(self):
        if self.pipe is None:
            from .diffusion import load_pipeline

            self.pipe = load_pipeline("tiny")
        return self.pipe

    def clean(self) -> list[torch.Tensor]:
        if self._clean is None:
            prompts, seeds = self._prompts_and_seeds()
            images = self.load()(prompts, num_inference_steps=GENERATION_STEPS, generator=seeds, output_type="pt").images
            self._clean = list(images.float().clamp(0, 1))
        return self._clean

    def marked(self, wm, key) -> list[torch.Tensor]:
        from .wrapping import wrap

        prompts, seeds = self._prompts_and_seeds()
        marked_pipe = wrap(self.load(), wm, key)
        try:
            images = marked_pipe(prompts, num_inference_steps=GENERATION_STEPS, generator=seeds, output_type="pt").images
        finally:
            marked_pipe.unwrap()  # a scheme may patch the shared pipeline (Stable Signature swaps its decoder)
        return list(images.float().clamp(0, 1))


def prepare_output(folder: Path) -> None:
    """An output folder the demo may fill: new, empty, or an earlier demo's (its files are
    replaced); anything else is refused rather than mixed with demo files."""
    from .errors import InputError

    if folder.exists():
        if not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder (choose another with -o)")
        if any(folder.iterdir()) and not (folder / DEMO_MARKER).is_file():
            raise InputError(f"{folder}: exists and is not an earlier demo's output folder; choose another with -o")
    folder.mkdir(parents=True, exist_ok=True)


def run_demo(*, num_images: Optional[int] = None, size: int = 256, output: Optional[str] = "wmkit-demo",
             methods: Optional[list[str]] = None, full: bool = False, stream=None) -> int:
    from . import data
    from .errors import WeightsError
    from .eval.metrics import psnr
    from .imageio import save_image
    from .keys import generate_key
    from .registry import WATERMARKERS, create

    started = time.perf_counter()
    stream = stream or sys.stdout  # looked up now: a default bound at import would outlive a replaced stdout
    num_images = num_images or (FULL_IMAGES if full else DEMO_IMAGES)
    attacks = DEMO_ATTACKS + (FULL_EXTRA_ATTACKS if full else [])
    methods = list(methods) if methods else WATERMARKERS.names()
    for method in methods:
        WATERMARKERS.get(method)  # an unknown name is a usage error before any work
    out = Path(output) if output else None
    if out is not None:
        prepare_output(out)
    photos = data.crops(num_images, size=size, group="evaluation", seed=0)
    print(f"wmkit demo: {len(photos)} offline photos ({size}x{size}) for post-hoc schemes, {num_images} generations "
          f"of the tiny pipeline for generation-time schemes; detected means p < {DEMO_ALPHA:g}. Keys: public demo "
          f"keys (seed {DEMO_KEY_SEED}), never use them for real marks.", file=stream)
    header = f"{'method':<16} {'attack':<18} {'detected':>8} {'median p':>10} {'bit acc':>8} {'PSNR dB':>8}"
    print(header, file=stream)
    print("-" * len(header), file=stream, flush=True)
    generator = torch.Generator().manual_seed(0)
    generations = _Generations(num_images)
    results: dict[str, dict] = {}
    qualities: dict[str, float] = {}
    for method in methods:
        start = time.perf_counter()
        key = generate_key(method, seed=DEMO_KEY_SEED)
        if WATERMARKERS.get(method).marks_at_generation():
            try:
                pipe = generations.load()
            except WeightsError as exc:
                print(f"{method:<16} not run: {exc}", file=stream)
                continue
            wm = create(method, pipeline=pipe)
            clean, marked = generations.clean(), generations.marked(wm, key)
        else:
            wm = create(method)
            missing = wm.missing_default_model()
            if missing:
                print(f"{method:<16} not run: {missing}", file=stream)
                continue
            clean, marked = photos, wm.embed(photos, key)
        # quality against the unmarked twin: the same photo, or the same prompt and seed
        qualities[method] = float(np.mean([psnr(a, b) for a, b in zip(clean, marked)]))
        if out is not None:
            for i, image in enumerate(marked):
                save_image(image, out / method / f"{i:03d}.png", overwrite=True)
        results[method] = _rows(wm, key, clean, marked, attacks, generator, desc=method)
        _print_rows(stream, method, results[method], qualities[method], time.perf_counter() - start)
    print("p-values use the shipped null calibration where one exists (see `wmkit verify --help`). PSNR: against the "
          "same photo unmarked, or for generation-time schemes the same prompt and seed without the mark.", file=stream)
    if out is not None and results:
        from .atomic import write_bytes
        from .eval.heatmap import heatmap_from_demo

        record = {"alpha": DEMO_ALPHA, "images": num_images, "size": size, "full": full, "key_seed": DEMO_KEY_SEED,
                  "attacks": attacks, "psnr": qualities,
                  "rows": {m: {a: None if row is None else dict(zip(("detected", "median_p", "bit_accuracy", "n"), row))
                               for a, row in rows.items()} for m, rows in results.items()}}
        write_bytes(out / DEMO_MARKER, (json.dumps(record, indent=2) + "\n").encode(), overwrite=True)
        heatmap = heatmap_from_demo(record, out / "heatmap.png")
        print(f"heatmap: {heatmap}; marked images in {out}/METHOD/ ({time.perf_counter() - started:.0f} s in all)", file=stream)
    return 0
