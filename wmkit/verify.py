"""Verification at volume: one record per image, in input order, from one process, a pool of
workers, or processes launched by ``accelerate launch`` (each its share, merged at the end).

``Verifier`` holds what every image needs (the scheme, its keys and calibration) and turns a
path into the record ``wmkit verify`` prints. ``verify_records`` runs it over any number of
paths: in this process, or with ``workers`` processes, each building its own verifier once
and reading one image at a time. Paths are handed out a window at a time, so memory stays
flat however long the list, and records come back in input order, so the output does not
depend on the number of workers (each worker runs ``cpu_count // workers`` torch threads;
the records equal a one-process run with as many threads, tested).

``VerifyLog`` is the ``-o RESULTS.jsonl`` file: appended and flushed per image, resumed by a
rerun. Under ``accelerate launch`` process k of n verifies the images whose input index i
has i % n == k into ``RESULTS.jsonl.rank{k}`` (each resumable on its own), and the main
process then appends them to ``RESULTS.jsonl`` in input order (``merge_shards``): the file a
single process writes.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .errors import ConfigError, WmkitError, naming
from .keys import Key

WINDOW_PER_WORKER = 16  # paths in flight per worker: a pool waits on the slowest once per window


@dataclass(frozen=True)
class VerifySpec:
    """Everything a process needs to verify images like the command does (picklable)."""

    method: str
    config: dict
    keys: tuple[Key, ...]
    calibration: Any
    alpha: float
    show_bits: bool
    max_pixels: int


class Verifier:
    def __init__(self, spec: VerifySpec, wm=None):
        """``wm``: the scheme already made from ``spec`` (else it is made here)."""
        from .registry import create

        self.spec = spec
        self.wm = wm if wm is not None else create(spec.method, **spec.config)
        self.wm.set_calibration(spec.calibration)
        self.wm.null_model  # load now: a bad calibration file is a usage error, not N file errors

    def record(self, path) -> tuple[dict, Optional[str]]:
        """(the record of one image, the error message when it could not be verified)."""
        from .imageio import load_image

        wm, spec = self.wm, self.spec
        try:
            image = load_image(path, max_pixels=spec.max_pixels, min_pixels=wm.min_pixels, min_side=wm.min_side)
            if len(spec.keys) == 1:
                result = wm.detect([image], spec.keys[0])[0]
            else:
                result = wm.identify([image], list(spec.keys))[0]
            return {"path": str(path), **result.to_dict(spec.alpha, include_bits=spec.show_bits)}, None
        except WmkitError as exc:
            message = naming(path, str(exc))
            return {"path": str(path), "method": spec.method, "error": message}, message


def verify_records(spec: VerifySpec, paths: Iterable, *, workers: int = 1,
                   verifier: Optional[Verifier] = None) -> Iterator[tuple[Path, dict, Optional[str]]]:
    """(path, record, error message or None) for every path, in order."""
    if workers <= 1:
        verifier = verifier or Verifier(spec)
        for path in paths:
            yield (path, *verifier.record(path))
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked child of a process that has run torch's thread pool can hang
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(spec, threads)) as pool:
        iterator = iter(paths)
        while window := list(itertools.islice(iterator, WINDOW_PER_WORKER * workers)):
            for path, (record, error) in zip(window, pool.imap(_verify_in_worker, window)):
                yield path, record, error


_worker: Optional[Verifier] = None


def _start_worker(spec: VerifySpec, threads: int) -> None:
    import torch

    from .memory import reuse_freed_memory

    global _worker
    reuse_freed_memory()  # a process of the command's own, as the command's is
    torch.set_num_threads(threads)
    _worker = Verifier(spec)


def _verify_in_worker(path) -> tuple[dict, Optional[str]]:
    assert _worker is not None
    return _worker.record(path)


def listed_paths(source: str) -> Iterator[Path]:
    """Paths from a list file (or '-': standard input), one per line, read lazily; blank lines skipped."""
    handle = sys.stdin if source == "-" else open(source, encoding="utf-8")
    try:
        for line in handle:
            if line.strip():
                yield Path(line.rstrip("\n"))
    finally:
        if handle is not sys.stdin:
            handle.close()


class VerifyLog:
    """``wmkit verify -o RESULTS.jsonl``: one record per line, appended and flushed as each
    image is done, so a killed run loses at most the line it was writing; a rerun skips the
    images already recorded (errors included: delete a line to retry that image) and drops a
    last line cut short. Its first line records the run (method, key fingerprints): a file
    of another run is refused rather than mixed."""

    def __init__(self, path: str, run: dict):
        self.path, self.run = Path(path), {"wmkit_verify": 1, **run}
        self.appended = 0
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder; --output takes a file name (results.jsonl)")
        complete, self.done = self.read(self.path, self.run) if self.path.exists() else (0, set())
        self.resumed = len(self.done)
        self.handle = open(self.path, "r+b" if self.path.exists() else "wb")
        self.handle.seek(complete)
        self.handle.truncate()
        if complete == 0:
            self._write(self.run)

    @staticmethod
    def read(path: Path, run: dict) -> tuple[int, set[str]]:
        """(byte length of the complete records in the file, the paths they record); refuses a
        file that is not the results of this run."""
        path, run = Path(path), {"wmkit_verify": 1, **run}
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1  # a last line without its newline was cut short
        lines = data[:end].splitlines()
        if not lines:
            return 0, set()
        try:
            header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
        except json.JSONDecodeError:
            raise ConfigError(f"{path}: not a `wmkit verify -o` results file; choose another name") from None
        if not isinstance(header, dict) or header.get("wmkit_verify") != 1:
            raise ConfigError(f"{path}: not a `wmkit verify -o` results file; choose another name")
        if header != run:
            raise ConfigError(f"{path}: holds results of another run (method {header.get('method')}, keys "
                              f"{', '.join(header.get('keys', []))}); use another file to keep both")
        return end, {r["path"] for r in records}

    def _write(self, record: dict) -> None:
        self.handle.write((json.dumps(record) + "\n").encode())
        self.handle.flush()

    def append(self, record: dict) -> None:
        self._write(record)
        self.appended += 1

    def close(self) -> None:
        os.fsync(self.handle.fileno())
        self.handle.close()


class VerifyPlan:
    """Which inputs this process verifies and where its records go: every input into
    ``output`` (or nowhere), or under ``accelerate launch`` (``state``: accelerate's
    PartialState or ``eval.run``'s single process) its share into a shard of its own."""

    def __init__(self, inputs, files_from: Optional[str], output: Optional[str], spec: VerifySpec, state):
        self.inputs, self.files_from, self.output, self.state = list(inputs), files_from, output, state
        self.rank, self.world = state.process_index, state.num_processes
        self.run = {"method": spec.method, "keys": [k.fingerprint for k in spec.keys]}
        self.seen = 0
        self.done: set[str] = set()  # in ``output`` when a sharded run began: not handed out
        if self.world > 1:
            if output is None or files_from == "-":
                raise ConfigError("a sharded verify (accelerate launch) needs -o RESULTS.jsonl, and --files-from a "
                                  "file (every process reads the list)")
            if os.path.isfile(output):
                self.done = VerifyLog.read(Path(output), self.run)[1]
            self.log: Optional[VerifyLog] = VerifyLog(shard_path(output, self.rank), {**self.run, "shard": [self.rank, self.world]})
        else:
            self.log = VerifyLog(output, self.run) if output else None

    def paths(self) -> Iterator[Path]:
        """Every input path in order: folders listed whole (sorted), then the list file, read lazily."""
        from .imageio import iter_image_paths

        yield from iter_image_paths(self.inputs)
        if self.files_from is not None:
            yield from listed_paths(self.files_from)

    def to_verify(self) -> Iterator[Path]:
        """This process's paths not yet recorded (counting every input in ``seen``)."""
        recorded = self.log.done if self.log is not None else set()
        for i, path in enumerate(p for p in self.paths() if str(p) not in self.done):
            self.seen += 1
            if i % self.world == self.rank and str(path) not in recorded:
                yield path
        self.seen += len(self.done)

    @property
    def total(self) -> Optional[int]:
        """How many images ``to_verify`` yields, where that is known without reading a list."""
        if self.files_from is not None or self.world > 1:
            return None
        from .imageio import iter_image_paths

        recorded = self.log.done if self.log is not None else set()
        return sum(str(p) not in recorded for p in iter_image_paths(self.inputs))

    def append(self, record: dict) -> None:
        if self.log is not None:
            self.log.append(record)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.state.wait_for_everyone()

    def finish(self) -> None:
        """Say what a resumed file already held; the main process of a sharded run merges."""
        if self.log is not None and self.log.resumed:
            from .progress import progress_write

            progress_write(f"{self.log.path}: {self.log.resumed} images were already there (skipped), "
                           f"{self.log.appended} added", file=sys.stderr)
        if self.world > 1 and self.state.is_main_process:
            merge_shards(self.output, self.run, self.paths(), self.world, self.done)


def shard_path(output, rank: int) -> Path:
    return Path(f"{output}.rank{rank}")


def merge_shards(output, run: dict, paths: Iterable, world: int, done: set) -> int:
    """Append the shards' records to ``output`` in input order (``paths``: the run's inputs,
    again; ``done``: the paths ``output`` held when the run began) and delete the shards.
    Returns the number of records appended."""
    shards = [shard_path(output, k) for k in range(world)]
    handles = [open(path, encoding="utf-8") for path in shards]
    try:
        for handle in handles:
            handle.readline()  # the shard's header
        log = VerifyLog(output, run)
        todo = (path for path in paths if str(path) not in done)
        for i, path in enumerate(todo):
            line = handles[i % world].readline()
            if not line.endswith("\n") or json.loads(line).get("path") != str(path):
                raise WmkitError(f"{shards[i % world]}: has no record of {path}; run the same command again to finish it")
            log.append(json.loads(line))
        log.close()
    finally:
        for handle in handles:
            handle.close()
    for path in shards:
        path.unlink()
    return log.appended
