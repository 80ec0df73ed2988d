"""Embed and verify throughput (images/s) at 512x512, and PSNR, per post-hoc scheme.

    python benchmarks/throughput.py [--images 8] [--size 512]
"""
import argparse
import time

import numpy as np
import torch

import wmkit
from wmkit import data
from wmkit.eval.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    images = data.crops(args.images, size=args.size, group="evaluation", seed=0)
    print(f"{args.images} images at {args.size}x{args.size}, torch threads={torch.get_num_threads()}")
    print(f"{'method':<12} {'embed img/s':>12} {'verify img/s':>13} {'PSNR dB':>8} {'detected':>9}")
    for method in wmkit.list_watermarkers():
        wm = wmkit.create(method)
        if wm.generation_time:
            continue  # generation-time schemes: see benchmarks/initial_noise.py
        missing = getattr(wm, "missing_default_model", lambda: None)()
        if missing:
            print(f"{method:<12} not run: {missing}")
            continue
        key = wmkit.generate_key(method, seed=0)
        wm.embed(images[:1], key)  # warm-up (model loading)
        start = time.perf_counter()
        marked = wm.embed(images, key)
        embed_rate = len(images) / (time.perf_counter() - start)
        start = time.perf_counter()
        results = wm.detect(marked, key)
        verify_rate = len(images) / (time.perf_counter() - start)
        quality = np.mean([psnr(a, b) for a, b in zip(images, marked)])
        detected = np.mean([r.detected(1e-3) for r in results])
        print(f"{method:<12} {embed_rate:12.2f} {verify_rate:13.2f} {quality:8.2f} {detected:9.0%}")


if __name__ == "__main__":
    main()
