"""Generative and adversarial attacks on the shipped tiny pipeline: cost and potency.

    python benchmarks/generative_attacks.py [--photos 16] [--timing-images 2] [--forgery 16] [--out report_dir]

1. CPU seconds per 256x256 image for each generative attack (regen, rinse, vae_regen,
   paraphrase with a fixed prompt, adv_embed) at strength 0.5, one torch thread
   (``time.process_time``; wall seconds alongside).
2. ``wmkit eval`` over every scheme with weights here (post-hoc: dwtdct, dwtdctsvd, rivagan,
   hidden; generation-time, on pairs of tiny-pipeline generations: tree_ring, stable_signature)
   x the ``generative`` suite (each attack at strengths 0.25, 0.5, 1) on offline evaluation
   photos at 256x256: TPR@1e-3, PSNR and SSIM per cell, the potency ranking at matched
   quality, and the averaging forgery's false-attribution rate per post-hoc scheme
   (``--forgery N`` images).

Needs weights/tiny-ldm (or ``--pipeline FOLDER``); refuses to run on a missing pipeline rather
than on random weights (``--random-pipeline`` exists only to smoke-test this script).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.errors import WeightsError

TIMED = ["regen@0.5", "rinse@0.5", "vae_regen@0.5", "paraphrase@0.5,prompt=a photograph", "adv_embed@0.5"]
METHODS = ["dwtdct", "dwtdctsvd", "rivagan", "hidden", "tree_ring", "stable_signature"]


def timing(pipe, n: int) -> list[dict]:
    images = torch.stack(data.crops(n, size=256, group="evaluation", seed=123))
    rows = []
    for spec in TIMED:
        attack = parse_attack(spec, pipeline=pipe)
        attack(images[:1], generator=torch.Generator().manual_seed(0))  # warm-up (from_pipe, captioner, ...)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            attack(images[i : i + 1], generator=torch.Generator().manual_seed(i))
        rows.append({"attack": attack.describe(), "cpu_s_per_image": (time.process_time() - cpu) / n,
                     "wall_s_per_image": (time.perf_counter() - wall) / n})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="tiny")
    p.add_argument("--random-pipeline", action="store_true", help="smoke test only: tiny random weights")
    p.add_argument("--photos", type=int, default=16)
    p.add_argument("--timing-images", type=int, default=2)
    p.add_argument("--forgery", type=int, default=16)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--out", default=None, help="report folder (default: a temporary one)")
    p.add_argument("--progress", action="store_true", help="progress bar for the evaluation")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.random_pipeline:
        from wmkit.diffusion import random_pipeline

        pipe, label = random_pipeline(0), "random (smoke test)"
    else:
        from wmkit.diffusion import load_pipeline

        try:
            pipe, label = load_pipeline(args.pipeline), args.pipeline
        except WeightsError as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2

    print(f"## CPU time per 256x256 image (pipeline {label}, 1 thread)\n")
    print("| attack | CPU s/img | wall s/img |\n|---|---:|---:|")
    timed = timing(pipe, args.timing_images)
    for row in timed:
        print(f"| `{row['attack']}` | {row['cpu_s_per_image']:.2f} | {row['wall_s_per_image']:.2f} |")

    from wmkit.eval.run import run_eval

    out = Path(args.out or tempfile.mkdtemp(prefix="wmkit-generative-"))
    methods = []
    for method in args.methods:  # schemes whose default weights are missing are named, not silently dropped
        missing = wmkit.create(method).missing_default_model()
        if missing:
            print(f"\n{method}: not evaluated ({missing})")
        else:
            methods.append(method)
    outcome = run_eval(methods=methods, output=out, attacks="generative", offline_photos=args.photos, size=256,
                       pipeline=pipe, progress=args.progress, overwrite=True, forgery=args.forgery or None)
    summary = outcome.summary
    print(f"\n## TPR@1e-3 / PSNR / SSIM per cell ({args.photos} offline photos, 256x256)\n")
    print("| method | attack | TPR@1e-3 | PSNR dB | SSIM | attack s/img |\n|---|---|---:|---:|---:|---:|")
    fmt = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for row in summary["results"]:
        print(f"| {row['method']} | `{row['attack']}` | {fmt(row['tpr']['0.001'])} | {fmt(row['psnr'], 1)} | "
              f"{fmt(row['ssim'])} | {fmt(row['time_attack_s'], 2)} |")
    print("\n## Potency at matched quality\n")
    print("| method | rank | family | verdict | best setting | TPR | PSNR | min TPR any quality |\n|---|---:|---|---|---|---:|---:|---:|")
    for method, entries in summary["potency"]["ranking"].items():
        for e in entries:
            print(f"| {method} | {e['rank'] or '—'} | {e['attack_family']} | {e['verdict']} | {e['best_attack'] or '—'} | "
                  f"{fmt(e['best_tpr'])} | {fmt(e['best_psnr'], 1)} | {fmt(e['min_tpr_any_quality'])} |")
    if summary.get("forgery"):
        from wmkit.eval.forgery import markdown_section

        print("\n" + markdown_section(summary["forgery"]))
    print(f"\nreport: {out}")
    (out / "benchmark_timing.json").write_text(json.dumps({"pipeline": label, "timing": timed}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
