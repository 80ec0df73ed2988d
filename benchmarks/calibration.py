"""Fixed-key false-positive rates of the bit-based schemes, fair-coin vs calibrated p-values.

    python benchmarks/calibration.py [--images 100] [--size 512] [--methods dwtdct dwtdctsvd rivagan hidden]
                                     [--corpus DIR [--split all]] [--no-costs] [--power N]

Unwatermarked photos the shipped calibrations (and `hidden`'s extractor and whitening) never
saw: crops of the evaluation group, or with ``--corpus`` of a training corpus's images
(``--split all`` is held out from everything fitted on the bundled calibration group;
``validation`` from what was fitted on the corpus's train split), clean and attacked, tested
against fixed keys: all zeros, all ones, alternating, the decoder's majority message on
these photos and its complement (adversarial), and three random keys. Per condition: the
fraction below each alpha, pooled over keys and for the worst key, beside the 99% binomial
bound; the mean pairwise agreement of the decoded bits (0.5 for fair independent bits) and
the most bits any photo shares with the majority message. ``--power N``: the first N photos
marked with the three random keys, share detected at 1e-3 and 1e-6 per condition (what a
wider null costs), beside the fair-coin p-value and, with ``--before WEIGHTS_DIR``, the
calibrations of another weights folder (e.g. a checkout of the previous ones). Also
(unless ``--no-costs``): calibration time for 100 images and verify throughput with and
without a calibration.
"""
import argparse
import time

import numpy as np
import torch

import wmkit
from wmkit import data
from wmkit.attacks import SUITES, parse_attack
from wmkit.calibration.measure import calibrate_images
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.keys import generate_key
from wmkit.watermarkers.base import reported_log_p_values

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
    parser.add_argument("--power", type=int, default=0, metavar="N", help="also mark N photos and report detection")
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS,
                        help="attacks to test after (default: none and three the calibrations were not fitted with; "
                             "'calibration' adds the suite they were fitted with)")
    parser.add_argument("--unmasked", action="store_true",
                        help="test each fixed message as the bits written (hidden and stable_signature mask a given "
                             "payload: without this, the fixed payloads are written as secret-random bits)")
    parser.add_argument("--before", default=None, metavar="WEIGHTS_DIR",
                        help="with --power: also the detection rates under this folder's calibrations")
    args = parser.parse_args()
    conditions = list(dict.fromkeys(c for spec in args.conditions for c in (SUITES[spec] if spec in SUITES and spec != "none" else [spec])))
    if args.corpus:
        from wmkit.data.sampler import load_sources, training_crops

        # the bundled photos the corpus also holds are left out: the calibration group is what
        # the shipped calibrations (and hidden's whitening) were fitted on
        sources = load_sources(args.corpus, split=args.split, bundled=False)
        images = list(training_crops(args.images, args.size, seed=123, sources=sources, min_scale=0.35, flip=False))
        where = f"{args.corpus} ({args.split} split, {len(sources)} images, the bundled ones left out)"
        num_photos = len(sources)
    else:
        images = data.crops(args.images, size=args.size, group="evaluation", seed=123)
        where = "the evaluation group"
        num_photos = len(data.PHOTOS["evaluation"])
    # crop i is of photo i mod num_photos; the held-out majority of one half of the photos is
    # the other half's (a majority over the photos tested is partly their own bits)
    halves = [(np.arange(len(images)) % num_photos) % 2 == parity for parity in (0, 1)]
    print(f"{len(images)} crops of {args.size} px from {where}")
    for method in args.methods:
        wm = wmkit.create(method)
        generator = torch.Generator().manual_seed(0)
        decodes = {}
        for spec in conditions:
            batch = images if spec == "none" else [parse_attack(spec)(im[None], generator=generator)[0] for im in images]
            decodes[spec] = wm.extract(batch)
        n = wm.num_bits
        majority = (decodes["none"].mean(0) > 0.5).astype(np.uint8)
        rng = np.random.default_rng(1)
        keys = [np.zeros(n, np.uint8), np.ones(n, np.uint8), np.arange(n, dtype=np.uint8) % 2, majority, 1 - majority]
        keys += [rng.integers(0, 2, n).astype(np.uint8) for _ in range(3)]
        held_out = [(decodes["none"][~half].mean(0) > 0.5).astype(np.uint8) for half in halves]
        keys = [[m, m] for m in keys] + [held_out, [1 - m for m in held_out]]
        print(f"\n{method}: {len(images)} photos x {len(keys)} fixed keys (zeros, ones, alternating, majority of these "
              f"photos, its complement, 3 random, majority of the other half of the photos, its complement); bit-one rate on clean photos {decodes['none'].mean():.3f}; "
              f"calibration: {'shipped' if wm.null_model is not None else 'none (fair-coin only)'}"
              f"{'; messages tested as written (unmasked)' if args.unmasked else ''}")
        bounds = "  ".join(f"{a:g}: {binomial_upper_bound(a, len(images) * len(keys)):.4f} pooled, "
                           f"{binomial_upper_bound(a, len(images)):.4f} per key" for a in ALPHAS)
        print(f"99% bounds {bounds}")
        print(f"{'condition':<16}" + "".join(f"{'fair@' + format(a, 'g'):>12}" for a in ALPHAS)
              + "".join(f"{'cal@' + format(a, 'g'):>12}" for a in ALPHAS)
              + "".join(f"{'worst@' + format(a, 'g'):>12}" for a in ALPHAS) + f"{'agree':>8}{'max maj':>9}")
        for spec, bits in decodes.items():
            fair, cal = [], []
            for messages in keys:
                results = []
                for half, message in zip(halves, messages):
                    written = message if args.unmasked else wm.message(generate_key(method, seed=0).with_message(message))
                    results += wm.results_from_bits(bits[half], written)
                fair.append([r.p_value_analytic for r in results])
                cal.append([r.p_value for r in results])
            fair, cal = np.array(fair), np.array(cal)  # (keys, images)
            worst = [float(np.max(np.mean(cal < a, axis=1))) for a in ALPHAS]
            worst_key = int(np.argmax(np.mean(cal < ALPHAS[0], axis=1)))
            same = bits[:, None, :] == bits[None, :, :]
            pairs = np.triu_indices(len(bits), 1)
            agreement = float(same[pairs].mean()) if len(bits) > 1 else float("nan")
            most = int((bits == majority).sum(1).max())
            # crop i is of photo i mod num_photos, and a shift-invariant reader (hidden's folded tile)
            # reads crops of one photo alike: they are not independent tests, photos are
            photo_of = np.concatenate([np.flatnonzero(half) for half in halves]) % num_photos  # the order of `cal`
            photos_flagged = [max(len(set(photo_of[row < a])) for row in cal) for a in ALPHAS[:2]]
            print(f"{spec:<16}" + "".join(f"{np.mean(fair < a):12.4f}" for a in ALPHAS) + "".join(f"{np.mean(cal < a):12.4f}" for a in ALPHAS)
                  + "".join(f"{w:12.4f}" for w in worst) + f"{agreement:8.3f}{most:>6}/{n}   (worst at 1e-2: key {worst_key}; most photos one key flags at "
                  f"1e-2 / 1e-3: {photos_flagged[0]} / {photos_flagged[1]} of {num_photos})")
        if args.power:
            power(wm, method, images[:args.power], [m[0] for m in keys[5:8]], before=args.before)
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


def power(wm, method: str, images: list, messages: list, before=None) -> None:
    """Share of marked photos detected at 1e-3 and 1e-6 per condition: the reported p-value,
    the fair-coin one, and the one under the calibrations of the ``before`` weights folder."""
    from pathlib import Path

    from wmkit.calibration import BitNullModel, shipped_calibration_path

    old = None
    if before is not None:
        path = Path(before) / "calibration" / shipped_calibration_path(method, wm.config()).name
        old = BitNullModel.load(path) if path.exists() else None
    generator = torch.Generator().manual_seed(1)
    if method == "stable_signature":
        # a new key's decoder is a fine-tune of minutes; the public demo key's decoder ships
        from wmkit.demo import DEMO_KEY_SEED

        keys = [generate_key(method, seed=DEMO_KEY_SEED)]
    else:
        keys = [generate_key(method, seed=0).with_message(m) for m in messages]
    marked = [(key, wm.embed(images, key)) for key in keys]
    print(f"power: {len(images)} photos x {len(keys)} key(s), marked and attacked; share detected at 1e-3 / 1e-6 "
          f"with the reported p-value, the fair-coin one" + (", the one under --before's calibration" if before else "")
          + ("" if old is not None or before is None else " (none there: fair-coin)"))
    for spec in CONDITIONS:
        p, fair, p_old = [], [], []
        for key, batch in marked:
            attacked = batch if spec == "none" else [parse_attack(spec)(im[None], generator=generator)[0] for im in batch]
            bits = wm.extract(attacked)
            results = wm.results_from_bits(bits, wm.message(key))
            p += [r.p_value for r in results]
            fair += [r.p_value_analytic for r in results]
            if old is not None:
                matches = (bits == wm.message(key)[None]).sum(1)
                p_old += list(np.exp(reported_log_p_values(old, wm.message(key), matches, wm.num_bits)[0]))
        columns = [p, fair] + ([p_old if old is not None else fair] if before else [])
        print(f"  {spec:<16}" + "   ".join(f"{np.mean(np.array(c) < 1e-3):.3f} / {np.mean(np.array(c) < 1e-6):.3f}" for c in columns))


if __name__ == "__main__":
    main()
