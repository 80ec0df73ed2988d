"""Tree-Ring on the shipped tiny pipeline: detection under attacks, identification, false positives, cost.

    python benchmarks/tree_ring.py [--n 100] [--photos 50] [--threads 1] [--fpr-keys 2] [--id-keys 1000]

- n watermarked and n unwatermarked generations over the 20 prompts of the tiny pipeline's
  vocabulary (marked and unmarked from the same seeds and prompts), plus unwatermarked
  evaluation photos;
- per attack (none, JPEG 50, crop keeping 75% resized back, rotation 15, blur, noise,
  brightness 1.5): detection at p < 1e-3 and 1e-6 with ``detect`` (the geometric search's
  image-level stage included), AUC, and the false-positive rate of the same ``detect`` on the
  unmarked generations and photos against --fpr-keys keys, beside the 99% binomial bound;
- identification among --id-keys keys (the right key plus others) with the multi-key
  correction, on the clean marked generations;
- seconds per image of ``detect`` (unmarked and marked), and of generation;
- the quality price: PSNR and low-frequency similarity of marked vs unmarked twins, and how
  alike one key's generations are (mean pairwise correlation of 8 x 8 thumbnails) beside
  unmarked ones.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.diffusion import load_pipeline
from wmkit.eval.metrics import binomial_upper_bound, roc_curve
from wmkit.keys import generate_key
from wmkit.train.tiny_ldm import PHOTO_LABELS, photo_label

ATTACKS = ["none", "jpeg:50", "center_crop:0.75", "rotate:15", "gaussian_blur:1", "gaussian_noise:0.05", "brightness:1.5"]
PROMPTS = [photo_label(name) for name in PHOTO_LABELS]  # 20 prompts, all in the tiny vocabulary


def generate_set(pipe, key, n, seed0, marked, steps):
    tr = wmkit.create("tree_ring", pipeline=pipe)
    runner = wmkit.wrap(pipe, tr, key) if marked else pipe
    images = []
    for i in range(n):
        out = runner(PROMPTS[i % len(PROMPTS)], num_inference_steps=steps, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(seed0 + i), output_type="pt")
        images.append(out.images[0].float().clamp(0, 1))
    if marked:
        runner.unwrap()
    return images


def likeness(images) -> float:
    """Mean pairwise correlation of 8 x 8 grey thumbnails: how much images share their layout."""
    thumbs = torch.stack([F.interpolate(im.mean(0)[None, None], size=(8, 8), mode="area").flatten() for im in images])
    thumbs = thumbs - thumbs.mean(1, keepdim=True)
    thumbs = thumbs / thumbs.norm(dim=1, keepdim=True).clamp_min(1e-9)
    c = thumbs @ thumbs.T
    n = len(images)
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--fpr-keys", type=int, default=2, help="keys the unmarked sets are tested against with detect")
    parser.add_argument("--id-keys", type=int, default=1000)
    parser.add_argument("--attacks", nargs="*", default=ATTACKS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (use 1 beside other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("tiny")
    key = generate_key("tree_ring", seed=2024)
    start = time.perf_counter()
    marked = generate_set(pipe, key, args.n, 10_000, True, args.gen_steps)
    clean = generate_set(pipe, key, args.n, 10_000, False, args.gen_steps)
    gen_seconds = (time.perf_counter() - start) / (2 * args.n)
    photos = data.crops(args.photos, size=256, group="evaluation", seed=77)
    tr = wmkit.create("tree_ring", pipeline=pipe)
    print(f"tree_ring {tr.config()}; calibrated: {tr.null_model is not None}; {len(PROMPTS)} prompts; "
          f"{args.n} marked + {args.n} unmarked generations (same seeds), {args.photos} photos; "
          f"generation {gen_seconds:.2f} s/image ({args.gen_steps} steps)")
    psnr = [float(-10 * torch.log10(((m - c) ** 2).mean())) for m, c in zip(marked, clean)]
    print(f"marked vs unmarked twin: PSNR {np.mean(psnr):.1f} dB (the mark changes the sample, as Tree-Ring does); "
          f"layout likeness among generations: marked {likeness(marked):.3f}, unmarked {likeness(clean):.3f}")
    fpr_keys = [key] + [generate_key("tree_ring", seed=5000 + i) for i in range(args.fpr_keys - 1)]
    print(f"\n{'attack':<20}{'AUC':>7}{'det 1e-3':>10}{'det 1e-6':>10}{'FPR gen 1e-2/1e-3':>19}"
          f"{'FPR photo 1e-2/1e-3':>21}{'s/img marked':>14}{'s/img clean':>13}")
    gen = torch.Generator().manual_seed(0)
    for spec in args.attacks:
        attack = None if spec == "none" else parse_attack(spec)
        apply = (lambda ims: ims) if attack is None else (lambda ims: [attack(im[None], generator=gen)[0] for im in ims])
        sets = {"marked": apply(marked), "clean": apply(clean), "photos": apply(photos)}
        t0 = time.perf_counter()
        pos = tr.detect(sets["marked"], key)
        t_marked = (time.perf_counter() - t0) / len(pos)
        negatives = {}
        t0 = time.perf_counter()
        for group in ("clean", "photos"):
            negatives[group] = [r for k in fpr_keys for r in tr.detect(sets[group], k)]
        t_clean = (time.perf_counter() - t0) / sum(len(v) for v in negatives.values())
        p_pos = np.array([r.p_value for r in pos])
        neg_scores = [r.score for r in negatives["clean"][:args.n] + negatives["photos"][:args.photos]]
        auc = roc_curve([r.score for r in pos], neg_scores)[2]
        cells = []
        for group in ("clean", "photos"):
            p = np.array([r.p_value for r in negatives[group]])
            cells.append(f"{np.mean(p < 1e-2):.3f}/{np.mean(p < 1e-3):.3f}")
        print(f"{spec:<20}{auc:7.3f}{np.mean(p_pos < 1e-3):10.3f}{np.mean(p_pos < 1e-6):10.3f}{cells[0]:>19}{cells[1]:>21}"
              f"{t_marked:14.2f}{t_clean:13.2f}", flush=True)
    n_gen, n_photo = args.n * len(fpr_keys), args.photos * len(fpr_keys)
    print(f"(FPR: detect against {len(fpr_keys)} keys; 99% bounds {binomial_upper_bound(1e-2, n_gen):.3f} / "
          f"{binomial_upper_bound(1e-3, n_gen):.3f} for {n_gen} generation tests, {binomial_upper_bound(1e-2, n_photo):.3f} / "
          f"{binomial_upper_bound(1e-3, n_photo):.3f} for {n_photo} photo tests)")
    keys = [key] + [generate_key("tree_ring", seed=70_000 + i) for i in range(args.id_keys - 1)]
    t0 = time.perf_counter()
    found = tr.identify(marked, keys)
    right = np.mean([r.extra["key_index"] == 0 and r.p_value < 1e-3 for r in found])
    wrong = tr.identify(clean[:20], keys)
    print(f"\nidentification among {len(keys)} keys (no attack): right key at corrected p < 1e-3 for {right:.3f} "
          f"of {len(found)} marked generations; unmarked generations below 1e-3: "
          f"{np.mean([r.p_value < 1e-3 for r in wrong]):.3f} of {len(wrong)}; "
          f"{(time.perf_counter() - t0) / (len(found) + len(wrong)):.2f} s/image")


if __name__ == "__main__":
    main()
