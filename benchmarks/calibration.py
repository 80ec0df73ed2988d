"""Fixed-key false-positive rates of the peers, fair-coin vs calibrated p-values (issue 9).

    python benchmarks/calibration.py [--images 100] [--size 512] [--methods dwtdct dwtdctsvd rivagan]

Unwatermarked photos from the evaluation group (the shipped calibrations were
fitted on the disjoint calibration group), clean and attacked, tested against
fixed keys: all zeros, the decoder's majority message on these photos and its
complement (adversarial), and three random keys. Also: calibration time for
100 images and verify throughput with and without a calibration.
"""
import argparse
import time

import numpy as np
import torch

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.calibrate import calibrate_images
from wmkit.keys import generate_key

CONDITIONS = ["none", "jpeg:75", "resize:0.5", "brightness:1.5"]
ALPHAS = [1e-2, 1e-3, 1e-6]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=["dwtdct", "dwtdctsvd", "rivagan"])
    args = parser.parse_args()
    images = data.crops(args.images, size=args.size, group="evaluation", seed=123)
    for method in args.methods:
        wm = wmkit.create(method)
        generator = torch.Generator().manual_seed(0)
        decodes = {}
        for spec in CONDITIONS:
            batch = images if spec == "none" else [parse_attack(spec)(im[None], generator=generator)[0] for im in images]
            decodes[spec] = wm.extract(batch)
        n = wm.num_bits
        majority = (decodes["none"].mean(0) > 0.5).astype(np.uint8)
        rng = np.random.default_rng(1)
        keys = [np.zeros(n, np.uint8), majority, 1 - majority] + [rng.integers(0, 2, n).astype(np.uint8) for _ in range(3)]
        print(f"\n{method}: {len(images)} photos x {len(keys)} fixed keys (zeros, majority, anti-majority, 3 random); "
              f"bit-one rate on clean photos {decodes['none'].mean():.3f}")
        print(f"{'condition':<16}" + "".join(f"{'fair@' + format(a, 'g'):>12}" for a in ALPHAS) + "".join(f"{'cal@' + format(a, 'g'):>12}" for a in ALPHAS))
        for spec, bits in decodes.items():
            fair, cal = [], []
            for message in keys:
                key = generate_key(method, seed=0).with_message(message)
                results = wm.results_from_bits(bits, wm.message(key))
                fair += [r.p_value_analytic for r in results]
                cal += [r.p_value for r in results]
            fair, cal = np.array(fair), np.array(cal)
            print(f"{spec:<16}" + "".join(f"{np.mean(fair < a):12.4f}" for a in ALPHAS) + "".join(f"{np.mean(cal < a):12.4f}" for a in ALPHAS))
        # costs
        start = time.perf_counter()
        calibrate_images(wmkit.create(method, calibration=None), images[:100], attacks="none", progress=False)
        cal_time = time.perf_counter() - start
        key = generate_key(method, seed=3)
        timings = {}
        for label, spec in [("calibrated", "auto"), ("fair-coin", None)]:
            verifier = wmkit.create(method, calibration=spec)
            verifier.detect(images[:1], key)
            start = time.perf_counter()
            verifier.detect(images[:20], key)
            timings[label] = 20 / (time.perf_counter() - start)
        print(f"calibration of {min(100, len(images))} clean images: {cal_time:.1f} s; verify img/s: "
              + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
