"""`wmkit eval`: run the harness over images, merge, summarise and plot into a report folder.

    wmkit eval -m dwtdct -m rivagan --attacks standard photos/ -o report/
    wmkit eval -m dwtdct --offline-photos 64 --attacks strengths -o report/

Sharding: launched by ``accelerate launch`` (or ``torchrun``) the run is data parallel.
Process k of n evaluates the images whose index i has i % n == k into
``results.rank{k}.jsonl``; after a barrier the main process merges the shards into
``results.jsonl`` in image order and writes the summary and plots. Records do not depend
on which process made them (see ``harness``), so the merged file equals a single-process
run's apart from the timing fields. On a machine without GPUs launch with
``--multi_gpu`` (it only means "start n local processes"; ``--cpu`` starts one process
unless MPI is set up), e.g.::

    accelerate launch --multi_gpu --num_processes 4 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no -m wmkit.cli eval -m dwtdct photos/ -o report/
"""
from __future__ import annotations

import contextlib
import heapq
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence

from ..errors import ConfigError, InputError, WmkitError, require
from . import DEFAULT_GENERATION_STEPS

if TYPE_CHECKING:  # the harness imports torch: only where images are processed
    from .harness import ImageItem

DEFAULT_OFFLINE_PHOTOS = 16
DEFAULT_SIZE = 256
DEFAULT_ATTACKS = "quick"
DEFAULT_THREADS = 1
DEFAULT_PIPELINE = "tiny"  # for the attacks that need a diffusion pipeline (regen, paraphrase, ...)
RESULTS = "results.jsonl"
# every file an evaluation writes: what --overwrite may remove from an earlier run
_OUTPUT_PATTERNS = ("results.jsonl", "results.rank*.jsonl", "results.rank*.failed", "summary.json", "summary.md", "roc_*.png", "tpr_vs_strength_*.png", "quality_vs_robustness.png")


# -- processes ----------------------------------------------------------------------------
class _SingleProcess:
    """The state of a plain run, with the part of accelerate's PartialState used here."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def _launched_distributed() -> bool:
    """True under torchrun / accelerate launch (several processes) or mpirun."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def process_state():
    """accelerate's PartialState when launched with several processes, else a single process.

    Plain runs never import accelerate (it is an optional dependency). ``cpu=True``: the
    processes only need barriers (gloo works everywhere); without it, a CPU-only machine
    launched with --multi_gpu would give every process rank 0 and they would overwrite
    each other's shard.
    """
    if not _launched_distributed():
        return _SingleProcess()
    accelerate = require("accelerate", "a sharded `wmkit eval` (accelerate launch)", "accelerate")
    return accelerate.PartialState(cpu=True)


@contextlib.contextmanager
def torch_threads(count: Optional[int]):
    """Run with ``count`` intra-op threads, then restore. Why 1 by default: float reductions
    (resampling, blurs) round differently with different thread counts, and launchers start
    each process with one thread, so one thread everywhere keeps a sharded run identical to
    a plain one. Scale with processes instead."""
    import torch

    if count is None:
        yield
        return
    if count < 1:
        raise ConfigError(f"--threads must be at least 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSource:
    """Where the images come from: how many, what to call them, and the items themselves."""

    count: int
    description: str
    items: Callable[[], Iterator[ImageItem]]


def file_source(inputs: Sequence[str], *, min_pixels: int, min_side: int, max_pixels: int) -> ImageSource:
    from functools import partial

    from ..imageio import iter_image_paths, load_image
    from .harness import ImageItem

    paths = list(iter_image_paths(inputs))  # names only: every process lists the same, sorted
    if not paths:
        raise InputError(f"no input images found in {', '.join(map(str, inputs))}")

    def items() -> Iterator[ImageItem]:
        for i, path in enumerate(paths):
            load = partial(load_image, path, max_pixels=max_pixels, min_pixels=min_pixels, min_side=min_side)
            yield ImageItem(index=i, image_id=str(path), load=load)

    return ImageSource(count=len(paths), description=f"{len(paths)} files from {', '.join(map(str, inputs))}", items=items)


def offline_source(count: int, *, size: int, seed: int, min_pixels: int, min_side: int) -> ImageSource:
    from ..imageio import check_size

    if count < 1:
        raise ConfigError(f"--offline-photos must be at least 1, got {count}")
    try:
        check_size(size, size, min_pixels=min_pixels, min_side=min_side, name=f"--size {size}")
    except InputError as exc:
        raise ConfigError(f"{exc}; pass a larger --size") from None

    def items() -> Iterator[ImageItem]:
        from .. import data
        from .harness import ImageItem

        for i, crop in enumerate(data.iter_crops(count, size=size, group="evaluation", seed=seed)):
            yield ImageItem(index=i, image_id=f"offline-evaluation/seed{seed}/{i:05d}", load=lambda crop=crop: crop)

    return ImageSource(count=count, description=f"{count} offline evaluation photos at {size}x{size}", items=items)


def shard(items: Iterable[ImageItem], *, index: int, count: int) -> Iterator[ImageItem]:
    """This process's share: images i with i % count == index."""
    return (item for item in items if item.index % count == index)


# -- the report folder -----------------------------------------------------------------------
def check_report_dir(path: Path, *, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; name a new report folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"{path}: the report folder is not empty; name a new one or pass --overwrite")


def clear_outputs(path: Path) -> None:
    """Remove what an earlier evaluation wrote here (and nothing else)."""
    for pattern in _OUTPUT_PATTERNS:
        for old in path.glob(pattern):
            old.unlink()


def merge_shards(shards: Sequence[Path], target: Path) -> int:
    """Merge per-process record files into one, in image order; returns the number of lines.

    Each shard is already in image order (a process takes its images in order) and an image
    lives in exactly one shard, so a streaming k-way merge by image index reproduces the
    order of a single-process run without holding the records in memory.
    """
    def lines(path: Path) -> Iterator[tuple[int, str]]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["image_index"], line

    count = 0
    with open(target, "w") as out:
        for _, line in heapq.merge(*(lines(p) for p in shards), key=lambda pair: pair[0]):
            out.write(line)
            count += 1
    return count


# -- the run -----------------------------------------------------------------------------------
@dataclass
class EvalOutcome:
    report_dir: Path
    is_main_process: bool
    failed_images: int  # all processes' on the main process, this process's elsewhere
    summary: Optional[dict] = None  # main process only
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation is asked to do: the options of `wmkit eval`.

    ``inputs`` are image files and folders; without them, ``offline_photos`` (default 16)
    crops of the offline evaluation photos at ``size`` pixels. ``pipeline`` ("tiny", a local
    diffusers folder or a pipeline object) serves the attacks that need one and the
    generation-time schemes (Tree-Ring), which are evaluated on its generations from
    ``prompts`` (``generation_steps`` steps; input image i only lends its index and id: see
    ``harness.GenerationPairs``); it is loaded once, and only when needed. ``forgery``: run
    the averaging forgery per post-hoc method, on the run's own first 2 x ``forgery`` images
    (that many to estimate from, that many to forge; ``wmkit.eval.forgery.forgery_on_images``),
    and add its false-attribution rates to the report."""

    methods: Sequence[str]
    output: str | os.PathLike
    attacks: Sequence[str] | str = DEFAULT_ATTACKS
    inputs: Sequence[str] = ()
    offline_photos: Optional[int] = None
    size: int = DEFAULT_SIZE
    seed: int = 0
    overwrite: bool = False
    max_pixels: Optional[int] = None
    threads: Optional[int] = DEFAULT_THREADS
    pipeline: Any = DEFAULT_PIPELINE
    forgery: Optional[int] = None
    prompts: Sequence[str] = ()
    generation_steps: int = DEFAULT_GENERATION_STEPS


@dataclass
class _Plan:
    """A checked request: the schemes with their keys, the attack cases, the images."""

    schemes: list
    cases: list
    source: ImageSource
    uses_pipeline: bool


def _plan(config: EvalConfig) -> _Plan:
    """Everything that can be wrong with the request, checked by every process before any of
    them writes, so they all stop alike instead of leaving one waiting at a barrier."""
    from ..types import DEFAULT_MAX_PIXELS
    from .harness import make_attack_cases, make_schemes

    schemes = make_schemes(list(config.methods), seed=config.seed, pipeline=config.pipeline, prompts=config.prompts,
                           generation_steps=config.generation_steps)
    cases = make_attack_cases(config.attacks, pipeline=config.pipeline)
    uses_pipeline = any(s.generation is not None for s in schemes) or any(c.attack is not None and c.attack.needs_pipeline for c in cases)
    if uses_pipeline:  # load it now (once, shared): a missing pipeline stops the run before it starts
        from ..diffusion import resolve_pipeline

        resolve_pipeline(config.pipeline)
    if config.forgery is not None and config.forgery < 1:
        raise ConfigError(f"--forgery must be at least 1, got {config.forgery}")
    min_pixels = max(s.watermarker.min_pixels for s in schemes)
    min_side = max(s.watermarker.min_side for s in schemes)
    if config.inputs and config.offline_photos is not None:
        raise ConfigError("give image files/folders or --offline-photos, not both")
    if config.inputs:
        source = file_source(config.inputs, min_pixels=min_pixels, min_side=min_side,
                             max_pixels=config.max_pixels or DEFAULT_MAX_PIXELS)
    else:
        count = DEFAULT_OFFLINE_PHOTOS if config.offline_photos is None else config.offline_photos
        source = offline_source(count, size=config.size, seed=config.seed, min_pixels=min_pixels, min_side=min_side)
    check_report_dir(Path(config.output), overwrite=config.overwrite)
    return _Plan(schemes=schemes, cases=cases, source=source, uses_pipeline=uses_pipeline)


def run_eval(config: Optional[EvalConfig] = None, *, progress: Optional[bool] = None,
             on_error: Optional[Callable[[ImageItem, str], None]] = None, state: Any = None, **options: Any) -> EvalOutcome:
    """Evaluate ``config.methods`` against ``config.attacks`` and write the report folder
    ``config.output``: ``run_eval(EvalConfig(...))``, or the same fields as keywords
    (``run_eval(methods=["dwtdct"], output="report")``). ``state`` is accelerate's
    PartialState (found automatically when launched with several processes); ``on_error`` is
    told about each image that fails (the run goes on)."""
    if config is None:
        config = EvalConfig(**options)
    elif options:
        raise ConfigError(f"give an EvalConfig or its fields as keywords, not both ({', '.join(sorted(options))})")
    state = state if state is not None else process_state()
    plan = _plan(config)
    report_dir = Path(config.output)
    state.wait_for_everyone()
    if state.is_main_process:
        report_dir.mkdir(parents=True, exist_ok=True)
        clear_outputs(report_dir)
    state.wait_for_everyone()

    failed_here = _run_this_process(config, plan, report_dir, state, progress=progress, on_error=on_error)
    if not state.is_main_process:
        return EvalOutcome(report_dir=report_dir, is_main_process=False, failed_images=failed_here)
    _merge_process_files(report_dir, state.num_processes)

    from .records import read_records
    from .report import summarize, write_report

    summary = summarize(read_records(report_dir / RESULTS), config=_report_config(config, plan, state.num_processes))
    if config.forgery is not None and any(s.generation is None for s in plan.schemes):
        summary["forgery"] = _forgery_rows(config, plan)
    files = [report_dir / RESULTS, *write_report(report_dir, summary, report_dir / RESULTS)]
    return EvalOutcome(
        report_dir=report_dir, is_main_process=True, failed_images=summary["counts"]["failed_images"],
        summary=summary, files=tuple(files),
    )


def _run_this_process(config: EvalConfig, plan: _Plan, report_dir: Path, state, *, progress, on_error) -> int:
    """This process's share of the images through the harness, into its own record file;
    returns its failed images. A failure is written down for the main process before it is
    raised, so no process is left waiting at the barrier."""
    from .harness import run_harness

    rank, world = state.process_index, state.num_processes
    own_count = len(range(rank, plan.source.count, world))
    failure: Optional[BaseException] = None
    stats = None
    try:
        with torch_threads(config.threads), open(report_dir / f"results.rank{rank}.jsonl", "w") as out, \
                _progress_bar(own_count, enabled=progress if state.is_main_process else False) as bar:
            stats = run_harness(shard(plan.source.items(), index=rank, count=world), plan.schemes, plan.cases, out,
                                seed=config.seed, on_error=on_error, progress=bar)
    except BaseException as exc:
        failure = exc
        (report_dir / f"results.rank{rank}.failed").write_text(f"{type(exc).__name__}: {exc}\n")
    state.wait_for_everyone()
    if failure is not None:
        raise failure
    return stats.failed_images


def _merge_process_files(report_dir: Path, world: int) -> None:
    """The processes' record files merged into ``results.jsonl`` (main process, after all wrote)."""
    failed = sorted(report_dir.glob("results.rank*.failed"))
    if failed:
        reasons = "; ".join(f"{p.name}: {p.read_text().strip()}" for p in failed)
        raise WmkitError(f"{len(failed)} of {world} evaluation processes failed ({reasons}); see their output above")
    shards = [report_dir / f"results.rank{k}.jsonl" for k in range(world)]
    merge_shards(shards, report_dir / RESULTS)
    for path in shards:
        path.unlink()


def _report_config(config: EvalConfig, plan: _Plan, world: int) -> dict:
    """What the report says about the run: schemes, keys, attacks, images, seed, processes."""
    attacks = config.attacks
    report = {
        "methods": [s.method for s in plan.schemes],
        "key_fingerprints": {s.method: s.key.fingerprint for s in plan.schemes},
        "attacks": [c.spec for c in plan.cases],
        "attack_request": attacks if isinstance(attacks, str) else list(attacks),
        "images": plan.source.description,
        "seed": config.seed,
        "processes": world,
        "torch_threads_per_process": config.threads,
        "wmkit_version": __import__("wmkit").__version__,
    }
    if plan.uses_pipeline:
        report["pipeline"] = config.pipeline if isinstance(config.pipeline, str) else type(config.pipeline).__name__
    for s in plan.schemes:
        if s.generation is not None:
            report.setdefault("generated_images", {})[s.method] = {
                "description": s.generation.describe(), "prompts": list(s.generation.prompts), "steps": s.generation.steps}
    return report


def _forgery_rows(config: EvalConfig, plan: _Plan) -> list[dict]:
    """The averaging forgery per post-hoc scheme and estimator, on the run's own images (the
    first 2 x ``forgery``, squared to ``size``): it adds an estimated mark to clean images, a
    post-hoc notion."""
    import itertools

    from .forgery import ESTIMATORS, forgery_on_images

    images = [item.load() for item in itertools.islice(plan.source.items(), 2 * config.forgery)]
    with torch_threads(config.threads):
        return [
            forgery_on_images(s.watermarker, s.key, images, n_estimate=config.forgery, n_test=config.forgery,
                              size=config.size, estimator=estimator).as_dict()
            for s in plan.schemes if s.generation is None
            for estimator in ESTIMATORS
        ]


def _progress_bar(total: int, *, enabled: Optional[bool]):
    from ..progress import progress

    return progress(total=total, desc="eval", unit="img", enabled=enabled)
