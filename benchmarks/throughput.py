"""Embed (or generate) and verify throughput of every registered scheme, side by side.

    python benchmarks/throughput.py [--images 4] [--sizes 256 512] [--threads 1 2]
                                    [--methods ...] [--markdown FILE]

Each scheme runs in a process of its own, so the peak RSS printed is that scheme's. At each
size and torch thread count, post-hoc schemes mark --images evaluation photos (embed);
generation-time schemes generate --images images with the shipped tiny pipeline at that size
(25 steps). Stable Signature, which also marks photos through its decoder, marks photos with
the public demo key, whose decoder ships, so no fine-tuning is timed. Then each scheme
verifies its own marked images against the key. Printed: images/s for both, peak RSS, PSNR
of post-hoc marks and the share detected at 1e-3 (a check that the timed work is the real
one); and verify on the unmarked photos, most of what a platform checks. Process start and
model loading are left out (one warm-up image first); cold starts of the command line are
timed separately, beside a bare `import torch`, in the same run.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

GENERATION_STEPS = 25


def measure(method: str, sizes: list[int], threads: list[int], count: int) -> None:
    """One scheme, every size and thread count: JSON lines on stdout."""
    import wmkit
    from wmkit import data
    from wmkit.demo import DEMO_KEY_SEED
    from wmkit.eval.metrics import psnr
    from wmkit.memory import reuse_freed_memory

    reuse_freed_memory()  # as every wmkit command does
    wm = wmkit.create(method)
    missing = wm.missing_default_model()
    if missing:
        print(json.dumps({"method": method, "error": missing}), flush=True)
        return
    pipe = None
    if not wm.marks_existing_images():
        from wmkit.diffusion import load_pipeline

        pipe = load_pipeline("tiny")
        wm = wmkit.create(method, pipeline=pipe)
    key = wmkit.generate_key(method, seed=DEMO_KEY_SEED if method == "stable_signature" else 0)
    for size in sizes:
        photos = data.crops(count + 1, size=size, group="evaluation", seed=0)
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            if pipe is None:
                wm.embed(photos[:1], key)  # warm-up: weights, caches
                start = time.perf_counter()
                marked = wm.embed(photos[1:], key)
                embed_seconds = time.perf_counter() - start
                quality = float(np.mean([psnr(a, b) for a, b in zip(photos[1:], marked)]))
            else:
                runner = wmkit.wrap(pipe, wm, key)
                generate = lambda i: runner("a photograph", num_inference_steps=GENERATION_STEPS, height=size, width=size,
                                            generator=torch.Generator().manual_seed(i), output_type="pt").images[0]
                generate(-1)
                start = time.perf_counter()
                marked = [generate(i).float().clamp(0, 1) for i in range(count)]
                embed_seconds = time.perf_counter() - start
                runner.unwrap()
                quality = None
            wm.detect(marked[:1], key)
            start = time.perf_counter()
            results = wm.detect(marked, key)
            verify_seconds = time.perf_counter() - start
            # unmarked images are most of what a platform verifies, and some readers search longer on them
            start = time.perf_counter()
            wm.detect(photos[1:], key)
            clean_seconds = time.perf_counter() - start
            print(json.dumps({
                "method": method, "size": size, "threads": n_threads, "mode": "generate" if pipe is not None else "embed",
                "embed_per_s": count / embed_seconds, "verify_per_s": count / verify_seconds,
                "verify_clean_per_s": count / clean_seconds, "psnr": quality,
                "detected": float(np.mean([r.p_value < 1e-3 for r in results])),
            }), flush=True)
    print(json.dumps({"method": method, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def cold_start(command: list[str], repeats: int = 3) -> float:
    """Median wall time of a fresh process, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images timed per size and thread count")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered scheme")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.sizes, args.threads, args.images)
        return
    import wmkit

    methods = args.methods or wmkit.list_watermarkers()
    python = sys.executable
    startup = {
        "import torch": cold_start([python, "-c", "import torch"]),
        "wmkit --help": cold_start([python, "-m", "wmkit.cli", "--help"]),
        "wmkit list": cold_start([python, "-m", "wmkit.cli", "list"]),
    }
    print("cold start (median of 3): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())
          + f"; --help / import torch = {startup['wmkit --help'] / startup['import torch']:.2f}", flush=True)
    rows, rss = [], {}
    for method in methods:
        out = subprocess.run([python, __file__, "--child", method, "--images", str(args.images),
                              "--sizes", *map(str, args.sizes), "--threads", *map(str, args.threads)],
                             capture_output=True, text=True)
        records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not records:
            print(f"{method}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        for record in records:
            if "error" in record:
                print(f"{method}: not run: {record['error']}", flush=True)
            elif "peak_rss_mb" in record:
                rss[method] = record["peak_rss_mb"]
            else:
                rows.append(record)
                print(f"  {method} {record['size']} px, {record['threads']} thread(s): {record['mode']} "
                      f"{record['embed_per_s']:.3f}/s, verify {record['verify_per_s']:.3f}/s marked, "
                      f"{record['verify_clean_per_s']:.3f}/s unmarked", flush=True)
    table = render(rows, rss, args)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")


def render(rows: list[dict], rss: dict, args) -> str:
    """Markdown: one line per scheme, images/s per size and thread count, RivaGAN's verify rate as the unit."""
    combos = [(s, t) for s in args.sizes for t in args.threads]
    head = ["scheme", "marks by"] + [f"embed {s} px, {t} thr" for s, t in combos] + \
        [f"verify {s} px, {t} thr" for s, t in combos] + [f"verify unmarked {max(args.sizes)} px, {max(args.threads)} thr", "peak RSS MB", f"PSNR dB ({max(args.sizes)} px)", "detected 1e-3"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference = {(r["size"], r["threads"]): r["verify_per_s"] for r in rows if r["method"] == "rivagan"}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = {(r["size"], r["threads"]): r for r in rows if r["method"] == method}
        any_row = next(iter(mine.values()))
        cells = [method, any_row["mode"]]
        cells += [f"{mine[c]['embed_per_s']:.2f}" if c in mine else "" for c in combos]
        cells += [f"{mine[c]['verify_per_s']:.2f}" + (f" ({mine[c]['verify_per_s'] / reference[c]:.1f}x)" if c in reference else "")
                  if c in mine else "" for c in combos]
        largest = mine.get((max(args.sizes), max(args.threads)), any_row)
        top = (max(args.sizes), max(args.threads))
        clean_reference = next((r["verify_clean_per_s"] for r in rows if r["method"] == "rivagan" and (r["size"], r["threads"]) == top), None)
        cells += [f"{largest['verify_clean_per_s']:.2f}" + (f" ({largest['verify_clean_per_s'] / clean_reference:.1f}x)" if clean_reference else "")]
        cells += [f"{rss.get(method, float('nan')):.0f}", f"{largest['psnr']:.1f}" if largest["psnr"] is not None else "",
                  f"{min(r['detected'] for r in mine.values()):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nimages/s (verify: in brackets, times RivaGAN's at the same size and threads); "
                 f"{args.images} images per cell, models loaded and warmed up first.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
