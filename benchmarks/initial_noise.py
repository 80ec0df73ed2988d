"""Initial-noise schemes (Tree-Ring, Gaussian Shading) on the shipped tiny pipeline, side by side:
detection under attacks, identification, false positives, quality, cost.

    python benchmarks/initial_noise.py [--schemes tree_ring gaussian_shading] [--n 100] [--photos 50]
                                       [--threads 1] [--fpr-keys 2] [--id-keys 1000] [--id-images N]

- per scheme, n watermarked generations over the 20 prompts of the tiny pipeline's vocabulary,
  and n unwatermarked ones from the same seeds and prompts (shared by every scheme), plus
  unwatermarked evaluation photos;
- per attack (none, JPEG 50, crop keeping 75% resized back, rotation 15, blur, noise,
  brightness 1.5): detection at p < 1e-3 and 1e-6 with ``detect`` (the geometric search's
  image-level stage included), AUC, and the false-positive rate of the same ``detect`` on the
  unmarked generations and photos against --fpr-keys keys, beside the 99% binomial bound;
- identification among --id-keys keys (the right key plus others) with the multi-key
  correction, on the clean marked generations;
- seconds per image of ``detect`` (unmarked and marked), and of generation;
- the quality price: PSNR of marked vs unmarked twins, how alike one key's generations are
  (mean pairwise correlation of 8 x 8 thumbnails) beside unmarked ones, and the Frechet
  distance between marked and unmarked generations on the shipped SSL backbone's features,
  beside the distance between two halves of the unmarked set (what sampling error alone gives).
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


def generate_set(pipe, scheme, key, n, seed0, steps):
    """n generations (scheme None: unmarked) from fixed prompts and seeds."""
    runner = wmkit.wrap(pipe, wmkit.create(scheme, pipeline=pipe), key) if scheme else pipe
    images = []
    for i in range(n):
        out = runner(PROMPTS[i % len(PROMPTS)], num_inference_steps=steps, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(seed0 + i), output_type="pt")
        images.append(out.images[0].float().clamp(0, 1))
    if scheme:
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


def load_backbone():
    from wmkit.watermarkers.ssl import load_backbone as load

    return load("tiny")


@torch.no_grad()
def features(backbone, images) -> torch.Tensor:
    """The shipped SSL backbone's whitened features (N, D) of the images."""
    return torch.cat([backbone(torch.stack(images[i:i + 16])) for i in range(0, len(images), 16)]).float()


def frechet(a: torch.Tensor, b: torch.Tensor, dims: int = 16) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D), in the ``dims``
    leading principal directions of both together (a few dozen images cannot estimate a
    full 256-dimensional covariance)."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    both = np.concatenate([a, b])
    directions = np.linalg.svd(both - both.mean(0), full_matrices=False)[2][:dims].T
    a, b = a @ directions, b @ directions
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(mu @ mu + np.trace(ca + cb - 2 * root))


def frechet_permutation(a: torch.Tensor, b: torch.Tensor, permutations: int = 200) -> tuple[float, float]:
    """The Frechet distance of two sets and how often random relabellings of their union give
    one at least as large (the permutation p-value of 'same distribution')."""
    observed = frechet(a, b)
    both = torch.cat([a, b])
    rng = np.random.default_rng(0)
    larger = 0
    for _ in range(permutations):
        order = torch.from_numpy(rng.permutation(len(both)))
        larger += frechet(both[order[:len(a)]], both[order[len(a):]]) >= observed
    return observed, (larger + 1) / (permutations + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=["tree_ring", "gaussian_shading"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--fpr-keys", type=int, default=2, help="keys the unmarked sets are tested against with detect")
    parser.add_argument("--id-keys", type=int, default=1000)
    parser.add_argument("--id-images", type=int, default=None, help="marked generations identified (default: all)")
    parser.add_argument("--attacks", nargs="*", default=ATTACKS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (use 1 beside other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("tiny")
    start = time.perf_counter()
    clean = generate_set(pipe, None, None, args.n, 10_000, args.gen_steps)
    clean_seconds = (time.perf_counter() - start) / args.n
    photos = data.crops(args.photos, size=256, group="evaluation", seed=77)
    backbone = load_backbone()
    clean_features = features(backbone, clean)
    half = len(clean) // 2
    print(f"{len(PROMPTS)} prompts; {args.n} unmarked generations ({clean_seconds:.2f} s/image, {args.gen_steps} steps), "
          f"{args.photos} photos; layout likeness among unmarked generations {likeness(clean):.3f}; Frechet distance "
          f"between their two halves (sampling error alone) {frechet(clean_features[:half], clean_features[half:]):.2f}")
    for scheme in args.schemes:
        run_scheme(args, pipe, scheme, clean, clean_features, photos, backbone)


def run_scheme(args, pipe, scheme, clean, clean_features, photos, backbone) -> None:
    key = generate_key(scheme, seed=2024)
    start = time.perf_counter()
    marked = generate_set(pipe, scheme, key, args.n, 10_000, args.gen_steps)
    gen_seconds = (time.perf_counter() - start) / args.n
    wm = wmkit.create(scheme, pipeline=pipe)
    print(f"\n== {scheme} {wm.config()}; calibrated: {wm.null_model is not None}; generation {gen_seconds:.2f} s/image")
    psnr = [float(-10 * torch.log10(((m - c) ** 2).mean())) for m, c in zip(marked, clean)]
    half = len(clean) // 2
    print(f"marked vs unmarked twin: PSNR {np.mean(psnr):.1f} dB; layout likeness among marked generations "
          f"{likeness(marked):.3f}")
    distance, p_value = frechet_permutation(features(backbone, marked[:half]), clean_features[half:])
    print(f"Frechet distance of marked (first half) to unmarked (second half) generations {distance:.2f}; "
          f"permutation p-value {p_value:.3f} (small: the two sets differ beyond sampling error)")
    fpr_keys = [key] + [generate_key(scheme, seed=5000 + i) for i in range(args.fpr_keys - 1)]
    print(f"{'attack':<20}{'AUC':>7}{'det 1e-3':>10}{'det 1e-6':>10}{'bit acc':>9}{'FPR gen 1e-2/1e-3':>19}"
          f"{'FPR photo 1e-2/1e-3':>21}{'s/img marked':>14}{'s/img clean':>13}")
    gen = torch.Generator().manual_seed(0)
    for spec in args.attacks:
        attack = None if spec == "none" else parse_attack(spec, pipeline=pipe)
        apply = (lambda ims: ims) if attack is None else (lambda ims: [attack(im[None], generator=gen)[0] for im in ims])
        sets = {"marked": apply(marked), "clean": apply(clean), "photos": apply(photos)}
        t0 = time.perf_counter()
        pos = wm.detect(sets["marked"], key)
        t_marked = (time.perf_counter() - t0) / len(pos)
        negatives = {}
        t0 = time.perf_counter()
        for group in ("clean", "photos"):
            negatives[group] = [r for k in fpr_keys for r in wm.detect(sets[group], k)]
        t_clean = (time.perf_counter() - t0) / sum(len(v) for v in negatives.values())
        p_pos = np.array([r.p_value for r in pos])
        neg_scores = [r.score for r in negatives["clean"][:args.n] + negatives["photos"][:args.photos]]
        auc = roc_curve([r.score for r in pos], neg_scores)[2]
        bit_acc = np.mean([r.bit_accuracy for r in pos]) if pos[0].bit_accuracy is not None else float("nan")
        cells = []
        for group in ("clean", "photos"):
            p = np.array([r.p_value for r in negatives[group]])
            cells.append(f"{np.mean(p < 1e-2):.3f}/{np.mean(p < 1e-3):.3f}")
        print(f"{spec:<20}{auc:7.3f}{np.mean(p_pos < 1e-3):10.3f}{np.mean(p_pos < 1e-6):10.3f}{bit_acc:9.3f}{cells[0]:>19}"
              f"{cells[1]:>21}{t_marked:14.2f}{t_clean:13.2f}", flush=True)
    n_gen, n_photo = args.n * len(fpr_keys), args.photos * len(fpr_keys)
    print(f"(FPR: detect against {len(fpr_keys)} keys; 99% bounds {binomial_upper_bound(1e-2, n_gen):.3f} / "
          f"{binomial_upper_bound(1e-3, n_gen):.3f} for {n_gen} generation tests, {binomial_upper_bound(1e-2, n_photo):.3f} / "
          f"{binomial_upper_bound(1e-3, n_photo):.3f} for {n_photo} photo tests)")
    keys = [key] + [generate_key(scheme, seed=70_000 + i) for i in range(args.id_keys - 1)]
    chosen = marked[:args.id_images] if args.id_images else marked
    t0 = time.perf_counter()
    found = wm.identify(chosen, keys)
    right = np.mean([r.extra["key_index"] == 0 and r.p_value < 1e-3 for r in found])
    wrong = wm.identify(clean[:20], keys)
    print(f"identification among {len(keys)} keys (no attack): right key at corrected p < 1e-3 for {right:.3f} "
          f"of {len(found)} marked generations; unmarked generations below 1e-3: "
          f"{np.mean([r.p_value < 1e-3 for r in wrong]):.3f} of {len(wrong)}; "
          f"{(time.perf_counter() - t0) / (len(found) + len(wrong)):.2f} s/image", flush=True)


if __name__ == "__main__":
    main()
