"""The streaming evaluation harness: images x schemes x attacks -> one JSON record per line.

For each image (one at a time, so memory stays flat however many there are) every scheme
embeds its mark once. A generation-time scheme (Tree-Ring) cannot mark a given image:
for it, input slot i becomes a pair of generations of the pipeline from the same prompt
and seed, with and without the mark (``GenerationPairs``); the unmarked twin plays the
role of the original (the negative rows; the marked rows' attack quality is measured
against the marked generation, since the mark itself changes the whole image). Then, for each attack plus "none", the *same* sampled attack
parameters are applied to the marked image and to the original, and both are detected:
the marked copy gives the true-positive rows, the original the negatives that the
calibration table and the ROC compare against, under exactly the same attack.

Randomness never depends on the order of work: the key of a scheme comes from
(seed, method) and an attack's generator from (seed, image id, attack spec). So the same
seed gives the same records whatever subset of images a process handles, and sharded runs
merge into exactly the single-process file (timing fields aside, see ``TIMING_FIELDS``).

Each record is a ``records.Record`` (the schema and its JSON line are there).
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TextIO

import torch

from ..errors import ConfigError, InputError, WmkitError
from . import DEFAULT_GENERATION_STEPS
from .records import DETECTION_FIELDS, NO_ATTACK, QUALITY_FIELDS, STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, TIMING_FIELDS, Record


# -- what is evaluated ------------------------------------------------------------------
@dataclass(frozen=True)
class ImageItem:
    """One input image, loaded only when its turn comes; ``load`` raises WmkitError if bad."""

    index: int
    image_id: str
    load: Callable[[], torch.Tensor]




@dataclass(frozen=True)
class GenerationPairs:
    """The images a generation-time scheme is evaluated on: for input slot ``image_id`` (index
    i), the pipeline's generation from prompt i (cycling) and a seed derived from the run seed
    and the image id, once through the plain pipeline and once through the watermarked one.
    Same prompt, same seed: the two differ by the mark only. Shard-independent like the rest."""

    pipeline: Any
    prompts: tuple[str, ...]
    steps: int = DEFAULT_GENERATION_STEPS

    def __call__(self, scheme: "Scheme", index: int, image_id: str, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(unmarked, marked) generations, each (3, H, W) in [0, 1]."""
        from ..wrapping import wrap

        prompt = self.prompts[index % len(self.prompts)]
        gen_seed = derive_seed(seed, "generate", image_id)
        images = []
        marked_pipe = wrap(self.pipeline, scheme.watermarker, scheme.key)
        try:
            for runner in (self.pipeline, marked_pipe):
                out = runner(prompt, num_inference_steps=self.steps, generator=torch.Generator().manual_seed(gen_seed), output_type="pt")
                images.append(out.images[0].float().clamp(0, 1))
        finally:
            marked_pipe.unwrap()
        return images[0], images[1]

    def describe(self) -> str:
        return f"generations of the pipeline ({self.steps} steps, {len(self.prompts)} prompts cycling, seeds from the image ids)"


@dataclass(frozen=True)
class Scheme:
    """A watermarker with the one key it is evaluated with (and, for a generation-time
    scheme, how its marked/unmarked generations are made)."""

    method: str
    watermarker: Any
    key: Any
    generation: Optional[GenerationPairs] = None


@dataclass(frozen=True)
class AttackCase:
    """An attack (None: no attack) with the labels its records carry."""

    spec: str  # canonical: attack.describe(), which parse_attack turns back into the same attack
    family: str  # the attack's registered name(s), e.g. "jpeg" or "center_crop+jpeg"
    strength: float  # in [0, 1]; 0 for no attack
    attack: Optional[torch.nn.Module]


def make_schemes(methods: Sequence[str], *, seed: int, pipeline: Any = None, prompts: Sequence[str] = (),
                 generation_steps: int = DEFAULT_GENERATION_STEPS) -> list[Scheme]:
    """One watermarker and one seeded key per method (the same seed gives the same key).

    Generation-time methods are built on ``pipeline`` ("tiny", a local diffusers folder or a
    pipeline object; loaded once) and evaluated on its generations from ``prompts``
    (default ``wmkit.diffusion.DEFAULT_PROMPTS``)."""
    from ..keys import generate_key
    from ..registry import WATERMARKERS, create

    if not methods:
        raise ConfigError("name at least one method to evaluate (-m METHOD; see `wmkit list`)")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"a method is named twice: {', '.join(methods)}")
    if generation_steps < 1:
        raise ConfigError(f"--generation-steps must be at least 1, got {generation_steps}")
    schemes = []
    for method in methods:
        key = generate_key(method, seed=derive_seed(seed, "key", method))
        if not WATERMARKERS.get(method).marks_at_generation():
            schemes.append(Scheme(method=method, watermarker=create(method), key=key))
            continue
        if pipeline is None:
            raise ConfigError(f"'{method}' marks images at generation time: evaluating it needs a pipeline (--pipeline)")
        from ..diffusion import DEFAULT_PROMPTS, resolve_pipeline

        pipe = resolve_pipeline(pipeline)
        prompt_list = tuple(p for p in prompts if p.strip()) or DEFAULT_PROMPTS
        schemes.append(Scheme(method=method, watermarker=create(method, pipeline=pipe), key=key,
                              generation=GenerationPairs(pipe, prompt_list, generation_steps)))
    return schemes


def split_attack_list(texts: Sequence[str] | str) -> list[str]:
    """'quick,jpeg:50,center_crop:0.5,resize_back=false' -> suite names and specs.

    Commas separate entries, but a spec's own options are written with commas too
    ("center_crop:0.5,resize_back=false"), so a piece of the form key=value is glued
    back onto the entry before it.
    """
    if isinstance(texts, str):
        texts = [texts]
    entries: list[str] = []
    for text in texts:
        for piece in (p.strip() for p in text.split(",")):
            if not piece:
                continue
            head = piece.split("=", 1)[0]
            if "=" in piece and ":" not in head and "@" not in head and "+" not in head:
                if not entries:
                    raise ConfigError(f"attack option {piece!r} has no attack before it (write e.g. center_crop:0.5,{piece})")
                entries[-1] += "," + piece
            else:
                entries.append(piece)
    return entries


def make_attack_cases(texts: Sequence[str] | str, *, pipeline: Any = None) -> list[AttackCase]:
    """'none' first, then every attack of the named suites and specs, duplicates dropped.

    ``pipeline`` (a pipeline object, "tiny" or a local diffusers folder, loaded lazily and
    once) goes to the attacks that need one (regen, paraphrase, ...)."""
    from ..attacks import SUITES, Sequential, parse_attack

    cases = [AttackCase(spec=NO_ATTACK, family=NO_ATTACK, strength=0.0, attack=None)]
    seen = {NO_ATTACK}
    for entry in split_attack_list(texts):
        specs = SUITES[entry] if entry in SUITES else [entry]
        for spec in specs:
            try:
                attack = parse_attack(spec, pipeline=pipeline)
            except ConfigError as exc:
                if spec == entry and ":" not in spec and "@" not in spec and "+" not in spec:
                    raise ConfigError(f"{exc} (or an attack suite: {', '.join(SUITES)})") from None
                raise
            canonical = attack.describe()
            if canonical in seen:
                continue
            seen.add(canonical)
            steps = list(attack.steps) if isinstance(attack, Sequential) else [attack]  # (a diffusion attack's .steps is a count)
            family = "+".join(step.name for step in steps)
            cases.append(AttackCase(spec=canonical, family=family, strength=float(attack.strength), attack=attack))
    return cases


# -- determinism -------------------------------------------------------------------------
def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from the run seed and labels: independent of the order of work."""
    text = "\x00".join(["wmkit-eval", str(int(seed)), *parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def attack_generator(seed: int, image_id: str, spec: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, "attack", image_id, spec))


# -- one image ------------------------------------------------------------------------------
def _finite(value: float) -> Optional[float]:
    """JSON has no NaN or Infinity: undefined or infinite numbers become null."""
    return value if value is not None and math.isfinite(value) else None


def _quality(original: torch.Tensor, image: torch.Tensor) -> dict[str, Optional[float]]:
    from .metrics import ms_ssim, psnr, ssim

    return {
        "psnr": _finite(psnr(original, image)),
        "ssim": _finite(ssim(original, image)),
        "ms_ssim": _finite(ms_ssim(original, image)),
    }


def _too_small(wm, image: torch.Tensor) -> Optional[str]:
    from ..imageio import check_size

    try:
        check_size(image.shape[-2], image.shape[-1], min_pixels=wm.min_pixels, min_side=wm.min_side, name="attacked image")
    except InputError as exc:
        return str(exc)
    return None


def _detection_fields(result) -> dict[str, Any]:
    log10_p = result.extra.get("log10_p_value")
    if log10_p is None:  # schemes without an exact log form: from the p-value itself
        log10_p = math.log10(max(result.p_value, sys.float_info.min))
    return {
        "p_value": float(result.p_value),
        "p_value_analytic": float(result.p_value_analytic),
        "log10_p_value": float(log10_p),
        "score": float(result.score),
        "bit_accuracy": None if result.bit_accuracy is None else float(result.bit_accuracy),
        "calibrated": bool(result.calibrated),
    }


_EMPTY_DETECTION = dict.fromkeys(DETECTION_FIELDS)


def evaluate_image(
    item_index: int,
    image_id: str,
    image: torch.Tensor,
    schemes: Sequence[Scheme],
    attacks: Sequence[AttackCase],
    *,
    seed: int,
) -> Iterator[Record]:
    """Every record of one image, in a fixed order: scheme, attack, watermarked then not."""
    # The attacked original is the same for every post-hoc scheme (same generator, same
    # image), so it and its quality numbers are computed once per attack.
    clean_quality: dict[tuple[str, str], dict] = {}
    attacked_originals: dict[tuple[str, str], tuple] = {}
    for scheme in schemes:
        original = image
        start = time.perf_counter()
        try:
            if scheme.generation is not None:  # the unmarked twin replaces the input image
                original, marked = scheme.generation(scheme, item_index, image_id, seed=seed)
            else:
                marked = scheme.watermarker.embed([image], scheme.key)[0]
        except WmkitError as exc:  # this scheme cannot mark this image: say so in every row
            marked, embed_error = None, f"embed failed: {exc}"
        time_embed = time.perf_counter() - start
        embed_quality = {f"embed_{k}": v for k, v in _quality(original, marked).items()} if marked is not None else {}
        for case in attacks:
            base = {
                "image_index": item_index, "image_id": image_id, "method": scheme.method,
                "attack": case.spec, "attack_family": case.family, "strength": case.strength,
            }
            if marked is None:
                for watermarked in (True, False):
                    yield _record(base, watermarked, STATUS_ERROR, embed_error, None, _EMPTY_DETECTION, {}, {})
                continue
            yield from _attack_and_detect(base, scheme, case, original, marked, embed_quality, time_embed, seed, clean_quality,
                                          attacked_originals)


def attack_pair(case: AttackCase, original: torch.Tensor, marked: torch.Tensor, *, seed: int, image_id: str,
                cache: Optional[dict] = None, cache_tag: str = "") -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The original and the marked image under the same sampled attack parameters.

    Parameters are sampled once, on the original (the run's generator for this image and
    attack), and replayed on the marked copy, so a negative row sees exactly the crop, noise
    field or rotation its positive row saw. Returns the images and the seconds each took.
    """
    if case.attack is None:
        return {"marked": marked, "clean": original}, {"marked": 0.0, "clean": 0.0}
    # the attacked original (and its parameters) is the same for every post-hoc scheme:
    # ``cache`` keeps it per image, so a diffusion attack runs once on it, not once per scheme
    entry = None if cache is None else cache.get((cache_tag, case.spec))
    if entry is None:
        generator = attack_generator(seed, image_id, case.spec)
        start = time.perf_counter()
        clean, params = case.attack(original[None], generator=generator, return_params=True)
        entry = (clean, params, time.perf_counter() - start)
        if cache is not None:
            cache[(cache_tag, case.spec)] = entry
    clean, params, time_clean = entry
    start = time.perf_counter()
    attacked_marked = case.attack.apply(marked[None], params)
    time_marked = time.perf_counter() - start
    return {"marked": attacked_marked[0], "clean": clean[0]}, {"marked": time_marked, "clean": time_clean}


def _attack_and_detect(
    base: dict,
    scheme: Scheme,
    case: AttackCase,
    image: torch.Tensor,
    marked: torch.Tensor,
    embed_quality: dict,
    time_embed: float,
    seed: int,
    clean_quality: dict[tuple[str, str], dict],
    attacked_originals: Optional[dict] = None,
) -> Iterator[Record]:
    """The two records (marked, original) of one scheme under one attack."""
    wm = scheme.watermarker
    try:
        # a generation-time scheme's original is its own unmarked generation: its own cache slot
        tag = scheme.method if scheme.generation is not None else ""
        attacked, times = attack_pair(case, image, marked, seed=seed, image_id=base["image_id"], cache=attacked_originals, cache_tag=tag)
    except WmkitError as exc:
        for watermarked in (True, False):
            yield _record(base, watermarked, STATUS_ERROR, f"attack failed: {exc}", None, _EMPTY_DETECTION, {}, {})
        return
    reason = _too_small(wm, attacked["marked"])
    detections: dict[str, dict] = {"marked": _EMPTY_DETECTION, "clean": _EMPTY_DETECTION}
    status, time_detect = (STATUS_SKIPPED if reason else STATUS_OK), 0.0
    if not reason:
        try:
            start = time.perf_counter()
            results = wm.detect([attacked["marked"], attacked["clean"]], scheme.key)
            time_detect = (time.perf_counter() - start) / 2
            detections = {"marked": _detection_fields(results[0]), "clean": _detection_fields(results[1])}
        except WmkitError as exc:
            status, reason = STATUS_ERROR, f"detection failed: {exc}"
    for watermarked, which in ((True, "marked"), (False, "clean")):
        image_after = attacked[which]
        if watermarked:
            # the attack's damage: against the original for a post-hoc scheme (the mark's own
            # change is negligible), against the marked generation for a generation-time one
            # (its mark changes the whole image: measured by the embed_* fields instead)
            quality = _quality(marked if scheme.generation is not None else image, image_after)
        else:
            # post-hoc schemes share the attacked original; a generation-time one has its own
            cache_key = (scheme.method if scheme.generation is not None else "", case.spec)
            if cache_key not in clean_quality:
                clean_quality[cache_key] = _quality(image, image_after)
            quality = clean_quality[cache_key]
        extra_quality = embed_quality if watermarked else dict.fromkeys(embed_quality)
        timing = {
            "time_embed_s": time_embed if watermarked else None,
            "time_attack_s": times[which],
            "time_detect_s": time_detect,
        }
        yield _record(base, watermarked, status, reason, image_after, detections[which], {**quality, **extra_quality}, timing)


def _record(
    base: dict, watermarked: bool, status: str, reason: Optional[str], image_after: Optional[torch.Tensor],
    detection: dict, quality: dict, timing: dict,
) -> Record:
    return Record(
        **base, watermarked=watermarked, status=status, reason=reason,
        width=None if image_after is None else int(image_after.shape[-1]),
        height=None if image_after is None else int(image_after.shape[-2]),
        **detection, **{k: quality.get(k) for k in QUALITY_FIELDS}, **{k: timing.get(k) for k in TIMING_FIELDS},
    )


def error_record(item: ImageItem, message: str) -> Record:
    """The one record of an image that could not be read."""
    return Record(image_index=item.index, image_id=item.image_id, method=None, attack=None, attack_family=None,
                  strength=None, watermarked=None, status=STATUS_ERROR, reason=message)


# -- the stream -------------------------------------------------------------------------------
@dataclass
class HarnessStats:
    images: int = 0
    records: int = 0
    failed_images: int = 0


def run_harness(
    items: Iterable[ImageItem],
    schemes: Sequence[Scheme],
    attacks: Sequence[AttackCase],
    out: TextIO,
    *,
    seed: int,
    on_error: Optional[Callable[[ImageItem, str], None]] = None,
    progress: Any = None,
) -> HarnessStats:
    """Evaluate each item in turn and append its records to ``out`` (JSON lines, flushed per image).

    ``progress`` is a tqdm bar (or None) advanced once per image; ``on_error`` is told about
    every image that could not be read (the CLI prints one line each).
    """
    stats = HarnessStats()
    for item in items:
        try:
            image = item.load()
        except WmkitError as exc:
            stats.failed_images += 1
            out.write(error_record(item, str(exc)).to_json() + "\n")
            stats.records += 1
            if on_error is not None:
                on_error(item, str(exc))
        else:
            for record in evaluate_image(item.index, item.image_id, image, schemes, attacks, seed=seed):
                out.write(record.to_json() + "\n")
                stats.records += 1
            del image
        stats.images += 1
        out.flush()  # records reach the file as they come, so a long run can be followed
        if progress is not None:
            progress.update(1)
    return stats
