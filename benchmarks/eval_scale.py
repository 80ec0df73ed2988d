"""How `wmkit eval` scales: image-attack pairs per second per scheme, and peak memory
against the number of images (it should stay flat: images are streamed one at a time).

    python benchmarks/eval_scale.py [--images 8] [--size 256] [--attacks jpeg:50,gaussian_blur:1,center_crop:0.75]
                                    [--memory-images 100,400] [--methods dwtdct,dwtdctsvd,rivagan]

A pair is one image under one attack setting ("none" included): both the marked and the
original copy attacked with the same parameters and detected, plus the quality metrics.
Peak memory is the max RSS of a fresh subprocess running the whole `wmkit eval` pipeline
(harness, merge, summary, plots) on N offline photos with dwtdct.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time


def throughput(method: str, *, images: int, size: int, attacks: str) -> dict:
    import torch

    from wmkit import data
    from wmkit.eval.harness import ImageItem, make_attack_cases, make_schemes, run_harness
    from wmkit.eval.run import torch_threads

    crops = data.crops(images, size=size, group="evaluation", seed=0)
    schemes = make_schemes([method], seed=0)
    cases = make_attack_cases(attacks)
    schemes[0].watermarker.embed(crops[:1], schemes[0].key)  # warm-up: model loading, first-call costs
    items = [ImageItem(index=i, image_id=str(i), load=lambda im=im: im) for i, im in enumerate(crops)]
    with torch_threads(1):  # what `wmkit eval` runs with by default
        start = time.perf_counter()
        stats = run_harness(items, schemes, cases, io.StringIO(), seed=0)
        seconds = time.perf_counter() - start
    pairs = images * len(cases)
    return {"method": method, "pairs": pairs, "records": stats.records, "seconds": seconds, "pairs_per_s": pairs / seconds, "torch_threads": torch.get_num_threads()}


def peak_rss_mib() -> float:
    """This process's peak resident set size. VmHWM where Linux has it: unlike ru_maxrss it
    is not inherited through fork + exec from a parent that was already large."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(num_images: int, attacks: str, size: int) -> None:
    """Run in a fresh process: the full eval pipeline, then print peak RSS as JSON."""
    import torch  # noqa: F401  (the imports are a constant; measure them apart from the run)

    import wmkit.eval.report  # noqa: F401

    before = peak_rss_mib()
    from wmkit.eval.run import run_eval

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_eval(methods=["dwtdct"], attacks=attacks, offline_photos=num_images, size=size, output=f"{tmp}/report", progress=False)
        seconds = time.perf_counter() - start
        records = outcome.summary["counts"]["records"]
    print(json.dumps({"images": num_images, "records": records, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "start_rss_mib": before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per scheme for the throughput table")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--attacks", default="jpeg:50,gaussian_blur:1,center_crop:0.75")
    parser.add_argument("--methods", default="dwtdct,dwtdctsvd,rivagan")
    parser.add_argument("--memory-images", default="100,400", help="image counts for the peak-memory runs ('' to skip)")
    parser.add_argument("--memory-attacks", default="jpeg:50")
    parser.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child is not None:
        memory_child(args._memory_child, args.memory_attacks, args.size)
        return

    n_attacks = len(args.attacks.split(",")) + 1
    print(f"throughput: {args.images} images at {args.size}x{args.size}, attacks none,{args.attacks} ({n_attacks} settings), 1 torch thread, 1 process")
    print(f"{'method':<10} {'pairs':>6} {'seconds':>8} {'pairs/s':>8} {'records/s':>10}")
    for method in args.methods.split(","):
        row = throughput(method, images=args.images, size=args.size, attacks=args.attacks)
        print(f"{method:<10} {row['pairs']:>6} {row['seconds']:>8.2f} {row['pairs_per_s']:>8.2f} {row['records'] / row['seconds']:>10.2f}", flush=True)

    sizes = [int(n) for n in args.memory_images.split(",") if n.strip()]
    if sizes:
        print(f"\npeak memory: dwtdct, attacks none,{args.memory_attacks}, {args.size}px offline photos, full `wmkit eval` pipeline, fresh process each")
        print(f"{'images':>7} {'records':>8} {'seconds':>8} {'RSS after imports MiB':>22} {'peak RSS MiB':>13}")
        for n in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--_memory-child", str(n), "--memory-attacks", args.memory_attacks, "--size", str(args.size)],
                check=True, capture_output=True, text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"{row['images']:>7} {row['records']:>8} {row['seconds']:>8.1f} {row['start_rss_mib']:>22.0f} {row['peak_rss_mib']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
