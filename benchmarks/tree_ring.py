"""Tree-Ring on the shipped tiny pipeline: robustness, calibration and inversion cost.

    python benchmarks/tree_ring.py [--n 100] [--photos 50] [--steps 10] [--sweep 10 25 50]

- n watermarked and n unwatermarked generations (prompts from the training labels,
  seeds disjoint from the shipped calibration's), plus unwatermarked evaluation photos;
- AUC and TPR at 1% empirical FPR (threshold from the unwatermarked generations and
  photos under the same attack) with no attack and under JPEG 50, crop keeping 75%,
  blur, noise, rotation 15 and brightness;
- the empirical FPR of the analytic and of the calibrated p-value at 1e-2 and 1e-3 on the
  unwatermarked generations and photos, pooled over --fpr-keys keys (the benchmark key and
  others: each inverted latent is tested against every key, which costs no inversion);
- detection time per image and AUC at each number of inversion steps in --sweep.
"""
import argparse
import time

import numpy as np
import torch

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.diffusion import load_pipeline
from wmkit.eval.metrics import binomial_upper_bound, roc_curve
from wmkit.keys import generate_key
from wmkit.train.tiny_ldm import PHOTO_LABELS, photo_label

ATTACKS = ["none", "jpeg:50", "center_crop:0.75", "gaussian_blur:1", "gaussian_noise:0.05", "rotate:15", "brightness:1.5"]
PROMPTS = [photo_label(n) for n in ["coffee", "chelsea", "rocket", "retina", "camera", "moon", "brick", "grass", "coins", "page"]]


def generate_set(pipe, key, n, seed0, marked, steps):
    tr = wmkit.create("tree_ring", pipeline=pipe)
    runner = wmkit.wrap(pipe, tr, key) if marked else pipe
    images = []
    for i in range(n):
        out = runner(PROMPTS[i % len(PROMPTS)], num_inference_steps=steps, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(seed0 + i), output_type="pt")
        images.append(out.images[0].float().clamp(0, 1))
    return images


def tpr_at_fpr(pos, neg, fpr=0.01):
    threshold = np.quantile(neg, 1 - fpr, method="higher")
    return float(np.mean(np.asarray(pos) > threshold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10, help="inversion steps for the attack table")
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--sweep", type=int, nargs="*", default=[10, 25, 50])
    parser.add_argument("--sweep-n", type=int, default=40, help="marked and clean generations used in the sweep")
    parser.add_argument("--fpr-keys", type=int, default=10, help="keys the unwatermarked sets are tested against")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all; use 1 beside other jobs: oversubscribed cores run 10x slower)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("tiny")
    key = generate_key("tree_ring", seed=2024)
    start = time.perf_counter()
    marked = generate_set(pipe, key, args.n, 10_000, True, args.gen_steps)
    clean = generate_set(pipe, key, args.n, 20_000, False, args.gen_steps)
    photos = data.crops(args.photos, size=256, group="evaluation", seed=77)
    print(f"generated {2 * args.n} images in {time.perf_counter() - start:.0f} s ({args.gen_steps} steps)")
    tr = wmkit.create("tree_ring", pipeline=pipe, inversion_steps=args.steps)
    has_cal = tr.null_model is not None
    print(f"\ninversion steps {args.steps}; calibrated p-values: {'shipped calibration' if has_cal else 'NONE (analytic only)'}")
    fpr_keys = [key] + [generate_key("tree_ring", seed=5000 + i) for i in range(args.fpr_keys - 1)]
    print(f"{'attack':<20}{'AUC':>7}{'TPR@1%FPR':>11}{'TPR p<1e-3 a/c':>16}"
          f"{'FPR gen a/c @1e-2':>19}{'FPR gen a/c @1e-3':>19}{'FPR photo a/c @1e-2':>21}{'FPR photo a/c @1e-3':>21}")
    gen = torch.Generator().manual_seed(0)
    for spec in ATTACKS:
        attack = None if spec == "none" else parse_attack(spec)
        apply = (lambda ims: ims) if attack is None else (lambda ims: [attack(im[None], generator=gen)[0] for im in ims])
        signal = {name: tr.extract(apply(ims)) for name, ims in [("marked", marked), ("clean", clean), ("photos", photos)]}
        res = {name: tr.results_from_signal(sig, key) for name, sig in signal.items()}
        score = {k: np.array([r.score for r in v]) for k, v in res.items()}
        neg = np.concatenate([score["clean"], score["photos"]])
        auc = roc_curve(score["marked"], neg)[2]
        tpr = "/".join(f"{np.mean([getattr(r, f) < 1e-3 for r in res['marked']]):.3f}" for f in ("p_value_analytic", "p_value"))
        cells = []
        for group in ("clean", "photos"):
            pooled = [r for k in fpr_keys for r in tr.results_from_signal(signal[group], k)]
            p_ana = np.array([r.p_value_analytic for r in pooled])
            p_cal = np.array([r.p_value for r in pooled])
            for alpha in (1e-2, 1e-3):
                cells.append(f"{np.mean(p_ana < alpha):.3f}/{np.mean(p_cal < alpha):.3f}")
        print(f"{spec:<20}{auc:7.3f}{tpr_at_fpr(score['marked'], neg):11.3f}{tpr:>16}"
              f"{cells[0]:>19}{cells[1]:>19}{cells[2]:>21}{cells[3]:>21}")
    n_gen, n_photo = args.n * len(fpr_keys), args.photos * len(fpr_keys)
    print(f"(FPR over {len(fpr_keys)} keys; sampling bounds, 99%: FPR <= {binomial_upper_bound(1e-2, n_gen):.3f} / "
          f"{binomial_upper_bound(1e-3, n_gen):.3f} for {n_gen} generation tests, {binomial_upper_bound(1e-2, n_photo):.3f} / "
          f"{binomial_upper_bound(1e-3, n_photo):.3f} for {n_photo} photo tests)")
    print(f"\n{'inversion steps':<16}{'s / image':>10}{'AUC':>7}{'TPR@1%FPR':>11}   ({args.sweep_n} marked vs {args.sweep_n} clean generations, no attack)")
    for steps in args.sweep:
        sweep = wmkit.create("tree_ring", pipeline=pipe, inversion_steps=steps, calibration=None)
        t0 = time.perf_counter()
        pos = [r.score for r in sweep.detect(marked[:args.sweep_n], key)]
        per_image = (time.perf_counter() - t0) / len(pos)
        neg = [r.score for r in sweep.detect(clean[:args.sweep_n], key)]
        print(f"{steps:<16}{per_image:10.2f}{roc_curve(pos, neg)[2]:7.3f}{tpr_at_fpr(pos, neg):11.3f}")


if __name__ == "__main__":
    main()
