"""Fixed-key false-positive rates of the bit-based schemes, fair-coin vs calibrated p-values.

    python benchmarks/calibration.py [--images 100] [--size 512] [--methods dwtdct dwtdctsvd rivagan hidden]
                                     [--corpus DIR [--split all]] [--no-costs]

Unwatermarked photos the shipped calibrations (and `hidden`'s extractor and whitening) never
saw: crops of the evaluation group, or with ``--corpus`` of a training corpus's images
(``--split all`` is held out from everything fitted on the bundled calibration group;
``validation`` from what was fitted on the corpus's train split), clean and attacked, tested
against fixed keys: all zeros, all ones, alternating, the decoder's majority message on
these photos and its complement (adversarial), and three random keys. Per condition: the
fraction below each alpha, pooled over keys and for the worst key, beside the 99% binomial
bound; the mean pairwise agreement of the decoded bits (0.5 for fair independent bits) and
the most bits any photo shares with the majority message. Also (unless ``--no-costs``):
calibration time for 100 images and verify throughput with and without a calibration.
"""
import argparse
import time

import numpy as np
import torch

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.calibrate import calibrate_images
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.keys import generate_key

CONDITIONS = ["none", "jpeg:75", "resize:0.5", "brightness:1.5"]
ALPHAS = [1e-2, 1e-3, 1e-6]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=["dwtdct", "dwtdctsvd", "rivagan"])
    parser.add_argument("--corpus", default=None, help="photos from this corpus (python -m wmkit.data corpus build)")
    parser.add_argument("--split", default="all", choices=["all", "train", "validation"])
    parser.add_argument("--no-costs", action="store_true", help="skip the calibration-time and throughput lines")
    args = parser.parse_args()
    if args.corpus:
        from wmkit.data.sampler import load_sources, training_crops

        # the bundled photos the corpus also holds are left out: the calibration group is what
        # the shipped calibrations (and hidden's whitening) were fitted on
        sources = load_sources(args.corpus, split=args.split, bundled=False)
        images = list(training_crops(args.images, args.size, seed=123, sources=sources, min_scale=0.35, flip=False))
        where = f"{args.corpus} ({args.split} split, {len(sources)} images, the bundled ones left out)"
    else:
        images = data.crops(args.images, size=args.size, group="evaluation", seed=123)
        where = "the evaluation group"
    print(f"{len(images)} crops of {args.size} px from {where}")
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
        keys = [np.zeros(n, np.uint8), np.ones(n, np.uint8), np.arange(n, dtype=np.uint8) % 2, majority, 1 - majority]
        keys += [rng.integers(0, 2, n).astype(np.uint8) for _ in range(3)]
        print(f"\n{method}: {len(images)} photos x {len(keys)} fixed keys (zeros, ones, alternating, majority, "
              f"anti-majority, 3 random); bit-one rate on clean photos {decodes['none'].mean():.3f}; "
              f"calibration: {'shipped' if wm.null_model is not None else 'none (fair-coin only)'}")
        bounds = "  ".join(f"{a:g}: {binomial_upper_bound(a, len(images) * len(keys)):.4f} pooled, "
                           f"{binomial_upper_bound(a, len(images)):.4f} per key" for a in ALPHAS)
        print(f"99% bounds {bounds}")
        print(f"{'condition':<16}" + "".join(f"{'fair@' + format(a, 'g'):>12}" for a in ALPHAS)
              + "".join(f"{'cal@' + format(a, 'g'):>12}" for a in ALPHAS)
              + "".join(f"{'worst@' + format(a, 'g'):>12}" for a in ALPHAS) + f"{'agree':>8}{'max maj':>9}")
        for spec, bits in decodes.items():
            fair, cal = [], []
            for message in keys:
                key = generate_key(method, seed=0).with_message(message)
                results = wm.results_from_bits(bits, wm.message(key))
                fair.append([r.p_value_analytic for r in results])
                cal.append([r.p_value for r in results])
            fair, cal = np.array(fair), np.array(cal)  # (keys, images)
            worst = [float(np.max(np.mean(cal < a, axis=1))) for a in ALPHAS]
            same = bits[:, None, :] == bits[None, :, :]
            pairs = np.triu_indices(len(bits), 1)
            agreement = float(same[pairs].mean()) if len(bits) > 1 else float("nan")
            most = int((bits == majority).sum(1).max())
            print(f"{spec:<16}" + "".join(f"{np.mean(fair < a):12.4f}" for a in ALPHAS) + "".join(f"{np.mean(cal < a):12.4f}" for a in ALPHAS)
                  + "".join(f"{w:12.4f}" for w in worst) + f"{agreement:8.3f}{most:>6}/{n}")
        if args.no_costs:
            continue
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
