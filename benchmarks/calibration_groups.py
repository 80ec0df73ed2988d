"""Does a bit-null calibration hold on photo groups it was not fitted on? Leave one group out.

    python benchmarks/calibration_groups.py --corpus DIR [--methods dwtdct dwtdctsvd hidden]
                                            [--crops 2] [--cache DIR]

The corpus's photos (train and validation splits; python -m wmkit.data corpus build) fall into
groups by where they come from (each Debian wallpaper package, the bundled scikit-image
photos). For each group, the shipped recipe's null (wmkit.calibration.fit_bit_null on clean
decodes and the `calibration` attack suite) is fitted on every *other* group and tests the
held-out group's photos, clean and after three attacks the fit never saw, against fixed keys:
all zeros, all ones, alternating, the decoder's majority message over the whole corpus, its
complement, and three random keys. Printed per condition: the share of tests below each alpha
with the reported p-value (max of calibrated and fair-coin), pooled and for the worst key,
beside the 99% binomial bounds; then the same for the shipped calibration as it is. Decodes
are cached (``--cache``) so a rerun only refits.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import wmkit
from wmkit.attacks import SUITES, parse_attack
from wmkit.calibration import fit_bit_null
from wmkit.data.sampler import MAX_SIDE, _shrink, training_crops
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.imageio import load_image
from wmkit.watermarkers.base import reported_log_p_values

FIT = ["none"] + SUITES["calibration"]
TEST = ["none", "jpeg:75", "resize:0.5", "brightness:1.5"]
ALPHAS = [1e-2, 1e-3]


def photo_group(item: dict) -> str:
    if item.get("source", "").startswith("bundled"):
        return "bundled"
    package = item.get("source_package", "")
    return "lomiri" if package.startswith("lomiri") else package


def corpus_crops(corpus: Path, crops_per_photo: int):
    """512 px crops of every photo: first a full view of each (a random position along its
    longer side), then random ones (35-100% of the shorter side)."""
    items = json.loads((corpus / "manifest.json").read_text())["images"]
    photos = [_shrink(load_image(corpus / item["file"]), MAX_SIDE).mul(255).round().to(torch.uint8) for item in items]
    groups = [photo_group(item) for item in items]
    # groups of a few photos are too small to hold out on their own
    counts = {g: groups.count(g) for g in set(groups)}
    groups = [g if counts[g] >= 5 else "other" for g in groups]
    crops, owners = [], []
    for k in range(crops_per_photo):
        for j, photo in enumerate(photos):
            crops.append(training_crops(k + 1, 512, seed=k + 1 + 10 * j, sources=[photo], min_scale=0.35, flip=False)[k])
            owners.append(j)
    return crops, np.array(groups)[owners]


def decode_all(method: str, crops: list, cache: Path | None) -> dict:
    """Bits decoded from every crop under every condition; with a cache, saved after each
    condition, so a run stopped part way (RivaGAN needs about an hour here) resumes there.
    Each condition's random attack parameters come from a generator seeded by the condition,
    so they do not depend on which conditions an earlier run already decoded."""
    import hashlib

    path = cache / f"decodes-{method}-{len(crops)}-v2.npz" if cache else None
    out = dict(np.load(path)) if path is not None and path.exists() else {}
    wm = wmkit.create(method, calibration=None)
    for spec in dict.fromkeys(FIT + TEST):
        if spec in out:
            continue
        seed = int.from_bytes(hashlib.sha256(spec.encode()).digest()[:4], "little")
        generator = torch.Generator().manual_seed(seed)
        batch = crops if spec == "none" else [parse_attack(spec)(c[None], generator=generator)[0] for c in crops]
        out[spec] = np.stack([wm.decode_bits([b])[0] for b in batch if min(b.shape[1:]) >= wm.min_side])
        print(f"  {method}: decoded {spec}", flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.stem + ".partial.npz")
            np.savez(partial, **out)
            partial.replace(path)
    return out


def fixed_keys(n: int, clean: np.ndarray) -> dict:
    majority = (clean.mean(0) > 0.5).astype(np.uint8)
    rng = np.random.default_rng(1)
    keys = {"zeros": np.zeros(n, np.uint8), "ones": np.ones(n, np.uint8), "alternating": np.arange(n, dtype=np.uint8) % 2,
            "majority": majority, "anti-majority": 1 - majority}
    keys.update({f"random-{i}": rng.integers(0, 2, n).astype(np.uint8) for i in range(3)})
    return keys


def summarise(label: str, log_p: dict, keys: dict) -> None:
    print(f"  {label}")
    for spec, per_key in log_p.items():
        table = np.array([per_key[k] for k in keys])  # keys x decodes
        cells = []
        for alpha in ALPHAS:
            rates = (table < np.log(alpha)).mean(1)
            cells.append(f"{rates.mean():.4f} pooled, {rates.max():.3f} worst ({list(keys)[rates.argmax()]})")
        print(f"    {spec:<16}" + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--methods", nargs="+", default=["dwtdct", "dwtdctsvd", "hidden"])
    parser.add_argument("--crops", type=int, default=2, help="512 px crops per photo")
    parser.add_argument("--cache", default=None, help="keep decodes here between runs")
    args = parser.parse_args()
    crops, groups = corpus_crops(Path(args.corpus), args.crops)
    names, sizes = np.unique(groups, return_counts=True)
    print(f"{len(crops)} crops of 512 px, groups: " + ", ".join(f"{g} {c}" for g, c in zip(names, sizes)))
    for method in args.methods:
        decodes = decode_all(method, crops, Path(args.cache) if args.cache else None)
        n = decodes["none"].shape[1]
        keys = fixed_keys(n, decodes["none"])
        tests = len(crops)
        print(f"\n{method}: {tests} tests per key and condition; 99% bounds "
              + ", ".join(f"{a:g}: {binomial_upper_bound(a, tests):.4f} per key, "
                          f"{binomial_upper_bound(a, tests * len(keys)):.4f} pooled" for a in ALPHAS))
        held_out = {spec: {k: np.zeros(tests) for k in keys} for spec in TEST}
        for group in names:
            fit_rows = groups != group
            # attacked copies too small for the scheme were dropped; keep the rows aligned
            fit_bits = np.concatenate([decodes[spec][fit_rows] for spec in FIT if len(decodes[spec]) == tests])
            null = fit_bit_null(fit_bits, method=method, config={})
            for name, message in keys.items():
                for spec in TEST:
                    matches = (decodes[spec][~fit_rows] == message).sum(1)
                    held_out[spec][name][~fit_rows] = reported_log_p_values(null, message, matches, n)[0]
        summarise("fitted on the other groups (leave one group out):", held_out, keys)
        shipped = wmkit.create(method).null_model
        if shipped is not None:
            as_is = {spec: {k: reported_log_p_values(shipped, m, (decodes[spec] == m).sum(1), n)[0] for k, m in keys.items()}
                     for spec in TEST}
            summarise(f"the shipped calibration ({shipped.info.get('source', '?')[:60]}...):", as_is, keys)


if __name__ == "__main__":
    main()
