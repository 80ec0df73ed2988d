"""`wmkit verify` at volume: images/s with 1 and N workers, memory over a long list, a killed run
resumed, all through the command line.

    python benchmarks/verify_volume.py [--images 2000] [--method dwtdct] [--size 256] [--workers 2]

- makes ``--images`` PNG crops of the offline evaluation photos (a fifth of them marked) in a
  temporary folder and a list file of their paths;
- runs ``wmkit verify --files-from LIST -o RESULTS.jsonl`` with 1 worker and with
  ``--workers N``, sampling the resident memory of the whole process tree (every worker
  included) twice a second: printed at 10%, 50% and 90% of the images, and the peak;
- checks both files are byte-identical, then kills a third run (SIGKILL, the whole process
  group) a third of the way in, reruns the same command, and checks the resumed file is
  byte-identical to the uninterrupted one.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def records_in(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def run_verify(command, out: Path, count: int, *, kill_at=None):
    """(seconds, {records: rss MB} samples, peak MB, killed) of one verify run."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    samples, peak = {}, 0.0
    while proc.poll() is None:
        time.sleep(0.5)
        rss, done = tree_rss_mb(proc.pid), records_in(out)
        peak = max(peak, rss)
        if rss > 0:  # 0: the process ended between the poll and the reading
            samples[done] = rss
        if kill_at is not None and done >= kill_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - start, samples, peak, True
    if proc.returncode not in (0, 1):
        sys.exit(f"verify failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, samples, peak, False


def at(samples: dict, records: int) -> float:
    """The memory sampled nearest to ``records`` records written."""
    return samples[min(samples, key=lambda n: abs(n - records))] if samples else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--method", default="dwtdct")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    import torch

    import wmkit
    from wmkit import data
    from wmkit.imageio import save_image
    from wmkit.keys import generate_key, save_key

    root = Path(args.dir or tempfile.mkdtemp(prefix="wmkit-volume-"))
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    key = generate_key(args.method, seed=7)
    save_key(key, root / "key.json", overwrite=True)
    wm = wmkit.create(args.method)
    base = data.crops(50, size=args.size, group="evaluation", seed=3)
    paths = []
    for i in range(args.images):
        path = images / f"{i:06d}.png"
        if not path.exists():
            image = base[i % len(base)]
            # a different image each time: a shift and a gain (the codec work stays the same)
            image = torch.roll(image, shifts=(i // len(base)) % args.size, dims=-1) * (0.9 + 0.1 * ((i * 7) % 11) / 10)
            if i % 5 == 0:
                image = wm.embed([image.clamp(0, 1)], key)[0]
            save_image(image.clamp(0, 1), path)
        paths.append(path)
    listing = root / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    print(f"{args.images} images of {args.size} px in {images} ({args.method}, a fifth marked)", flush=True)

    def command(out, workers):
        return [sys.executable, "-m", "wmkit.cli", "verify", "-m", args.method, "-k", str(root / "key.json"),
                "--files-from", str(listing), "-o", str(out), "--no-progress", "--workers", str(workers)]

    outputs = {}
    for workers in sorted({1, args.workers}):
        out = root / f"results-{workers}.jsonl"
        out.unlink(missing_ok=True)
        seconds, samples, peak, _ = run_verify(command(out, workers), out, args.images)
        outputs[workers] = out
        # not at the end: the workers may be gone already
        marks = ", ".join(f"{n} {at(samples, n):.0f}" for n in (args.images // 10, args.images // 2, args.images * 9 // 10))
        print(f"workers {workers}: {args.images / seconds:.1f} images/s ({seconds:.1f} s, process start included); "
              f"RSS MB of all processes after (images, MB): {marks}; peak {peak:.0f}", flush=True)
    same = len({o.read_bytes() for o in outputs.values()}) == 1
    print(f"records of {' and '.join(f'{w} worker(s)' for w in outputs)} byte-identical: {same}")

    killed = root / "killed.jsonl"
    killed.unlink(missing_ok=True)
    _, _, _, was_killed = run_verify(command(killed, args.workers), killed, args.images, kill_at=args.images // 3)
    cut = records_in(killed)
    run_verify(command(killed, args.workers), killed, args.images)
    resumed_same = killed.read_bytes() == outputs[args.workers].read_bytes()
    print(f"killed with SIGKILL at {cut} records (killed: {was_killed}), rerun: file byte-identical to the "
          f"uninterrupted run: {resumed_same}")


if __name__ == "__main__":
    main()
