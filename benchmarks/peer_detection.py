"""Peers on offline evaluation photos: false positives (a fresh random key per image, and
fixed keys) and detection of marked, unattacked photos, at alpha = 0.01 and 1e-3.

    python benchmarks/peer_detection.py [--images 24] [--size 256]
"""
import argparse

import numpy as np

import wmkit
from wmkit import data
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.keys import generate_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    images = data.crops(args.images, size=args.size, group="evaluation", seed=11)
    n = len(images)
    print(f"{n} evaluation photos at {args.size}px; 99.9% binomial bound on the FPR at 0.01: {binomial_upper_bound(0.01, n, 0.999):.3f}")
    print(f"{'method':<11}{'FPR@.01 cal':>12}{'FPR@.01 fair':>13}{'FPR@1e-3 cal':>13}{'TPR@.01':>9}{'TPR@1e-3':>9}{'bit acc':>8}")
    for method in ["dwtdct", "dwtdctsvd", "rivagan"]:
        wm = wmkit.create(method)
        clean = [wm.detect([img], generate_key(method, seed=1000 + i))[0] for i, img in enumerate(images)]
        key = generate_key(method, seed=7)
        marked = wm.detect(wm.embed(images, key), key)
        p_cal = np.array([r.p_value for r in clean])
        p_fair = np.array([r.p_value_analytic for r in clean])
        p_marked = np.array([r.p_value for r in marked])
        print(f"{method:<11}{np.mean(p_cal < 0.01):12.3f}{np.mean(p_fair < 0.01):13.3f}{np.mean(p_cal < 1e-3):13.3f}"
              f"{np.mean(p_marked < 0.01):9.3f}{np.mean(p_marked < 1e-3):9.3f}{np.mean([r.bit_accuracy for r in marked]):8.3f}")


if __name__ == "__main__":
    main()
