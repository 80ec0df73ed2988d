"""The `wmkit` command line (contract in the project's design notes).

Exit status: 0 ran fine; 2 bad usage or input (bad options, key, method);
1 any other error, including a batch in which some files failed (their error
records are printed and every other file is still processed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import ConfigError, InputError, WmkitError
from .progress import error_line, progress, progress_write
from .types import DEFAULT_ALPHA, DEFAULT_MAX_PIXELS

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# -- helpers -----------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser, *, key: bool = True) -> None:
    p.add_argument("-m", "--method", required=True, help="watermarking method (see `wmkit list`)")
    if key:
        p.add_argument("-k", "--key", required=True, action="append", help="key file (repeat for identification)")


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default=None, help="generation-time methods: 'tiny' (default) or a local diffusers folder")
    p.add_argument("--inversion-steps", type=_positive_int, default=None, help="tree_ring, gaussian_shading: DDIM inversion steps")
    p.add_argument("--extractor", default=None, help="hidden, stable_signature: 'tiny' (default), a wmkit HiDDeN folder or an official TorchScript extractor file")


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a bad value is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_progress(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def _create(method: str, **config):
    from .registry import create

    return create(method, **config)


def _pipeline_option(args) -> dict:
    """--pipeline / --inversion-steps / --extractor -> constructor options of the methods that take them."""
    import inspect

    from .registry import WATERMARKERS

    accepted = inspect.signature(WATERMARKERS.get(args.method).__init__).parameters
    config = {}
    for option in ("pipeline", "inversion_steps", "extractor"):
        value = getattr(args, option, None)
        if value is not None:
            if option not in accepted:
                raise ConfigError(f"--{option.replace('_', '-')} does not apply to '{args.method}'")
            config[option] = value
    return config


def _load_image_for(wm, path, max_pixels: int):
    from .imageio import load_image

    return load_image(path, max_pixels=max_pixels, min_pixels=wm.min_pixels, min_side=wm.min_side)


def _plan_outputs(args, paths) -> list[Path]:
    """Every output path, checked before any work: two inputs that map to one name, an output
    that is an input, an existing file (without --overwrite), a symbolic link or a folder in
    the way, an output folder that cannot be written. All problems are reported at once as
    a usage error (exit 2), so nothing is computed only to be refused."""
    from .atomic import UnsafeTarget, check_target, folder_is_writable
    from .imageio import output_path

    out_dir = Path(args.output)
    targets = [output_path(path, out_dir, ext="." + args.format) for path in paths]
    problems, claimed = [], {}
    inputs = {p.resolve() for p in paths}
    for path, target in zip(paths, targets):
        if target in claimed:
            problems.append(f"{claimed[target]} and {path} would both be written to {target} (rename one, or run them "
                            "into separate folders)")
            continue
        claimed[target] = path
        if target.resolve() in inputs and not target.is_symlink():
            if not args.overwrite:
                problems.append(f"{target}: is an input of this run; not overwritten (pass --overwrite to replace it)")
            continue
        try:
            check_target(target, overwrite=args.overwrite)
        except (FileExistsError, UnsafeTarget) as exc:
            problems.append(str(exc))
    if not folder_is_writable(out_dir):
        problems.insert(0, f"{out_dir}: cannot create files in this folder (permission denied or not a folder)")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise InputError("nothing was written:\n  " + "\n  ".join(shown))
    return targets


def _map_files(args, paths, transform, *, desc: str, load) -> int:
    """Load each file, transform it, save it in OUT_DIR under its own name.

    The input list is fixed and every output checked before the first image is touched
    (``_plan_outputs``); writes are atomic. One error line per bad file; the others are
    still processed (exit 1 if any failed)."""
    from .imageio import save_image

    paths = list(paths)
    targets = _plan_outputs(args, paths)
    failures = 0
    for path, target in progress(list(zip(paths, targets)), desc=desc, enabled=args.progress):
        try:
            image = transform(load(path))
        except WmkitError as exc:
            failures += 1
            error_line(path, str(exc))
            continue
        try:
            save_image(image, target, overwrite=args.overwrite)
        except WmkitError as exc:
            # the message names the output already ("OUT: exists"); say which input it was for,
            # rather than prefixing the input's path to it ("IN: OUT: exists")
            failures += 1
            error_line(None, f"{exc} (the result for {path} was not written)")
            continue
        if not args.quiet:
            progress_write(str(target))
    return EXIT_ERROR if failures else EXIT_OK


# -- commands ------------------------------------------------------------------------
def cmd_list(args) -> int:
    from .registry import list_attacks, list_watermarkers, WATERMARKERS

    print("watermarkers:")
    for name in list_watermarkers():
        cls = WATERMARKERS.get(name)
        kind = "generation-time" if cls.marks_at_generation() else "post-hoc"
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:<18} {kind:<16} {doc}")
    attacks = list_attacks()
    if attacks:
        print("attacks:")
        print("  " + ", ".join(attacks))
    return EXIT_OK


def cmd_keygen(args) -> int:
    from .keys import generate_key, parse_message, save_key
    from .screening import screen_key

    wm = _create(args.method)
    message = parse_message(args.message) if args.message is not None else None
    num_bits = wm.num_bits
    if message is not None:
        if num_bits is None:
            raise ConfigError(f"'{args.method}' is a zero-bit scheme and carries no message; drop --message")
        if len(message) != num_bits:
            raise ConfigError(f"--message has {len(message)} bits; '{args.method}' carries exactly {num_bits}")
    if Path(args.output).exists() and not args.overwrite:
        raise ConfigError(f"{args.output}: exists; refusing to overwrite a key (pass --overwrite)")
    key = generate_key(args.method, seed=args.seed, message=message)
    key, report = screen_key(wm, key, explicit_message=message is not None, force=args.force)
    save_key(key, args.output, overwrite=args.overwrite)
    if report:
        print(report, file=sys.stderr)
    print(f"wrote {args.output} ({key.method}, fingerprint {key.fingerprint})", file=sys.stderr)
    note = wm.first_use_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_embed(args) -> int:
    from .imageio import iter_image_paths
    from .keys import load_key

    wm = _create(args.method, **_pipeline_option(args))
    key = load_key(args.key[0], method=args.method, num_bits=wm.num_bits)
    if len(args.key) > 1:
        raise ConfigError("embed takes one key")
    if not wm.marks_existing_images():
        raise ConfigError(f"'{args.method}' marks at generation time: use `wmkit generate -m {args.method}`")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    paths = list(iter_image_paths(args.inputs))
    if not paths:
        raise InputError("no input images found")
    return _map_files(args, paths, lambda image: wm.embed([image], key)[0], desc="embed",
                      load=lambda path: _load_image_for(wm, path, args.max_pixels))


def cmd_generate(args) -> int:
    import torch

    from .diffusion import load_pipeline
    from .imageio import save_image
    from .keys import load_key
    from .wrapping import wrap

    if args.num_images < 1:
        raise ConfigError("-n must be at least 1")
    if len(args.key) > 1:
        raise ConfigError("generate takes one key")
    from .registry import WATERMARKERS

    if not WATERMARKERS.get(args.method).marks_at_generation():
        raise ConfigError(f"'{args.method}' is a post-hoc scheme: use `wmkit embed -m {args.method}` on existing images")
    options = _pipeline_option(args)
    key = load_key(args.key[0], method=args.method)
    out_dir = Path(args.output)
    targets = [out_dir / f"{args.seed + i:06d}.{args.format}" for i in range(args.num_images)]
    clashes = [t for t in targets if t.exists()]
    if clashes and not args.overwrite:
        raise InputError(f"{clashes[0]}: exists (pass --overwrite to replace it, or use another --seed or folder)")
    # one pipeline, shared by the scheme (detection, decoder fine-tuning) and the generation
    pipe = load_pipeline(options.pop("pipeline", None) or "tiny")
    wm = _create(args.method, pipeline=pipe, **options)
    marked_pipe = wrap(pipe, wm, key)
    for i, target in enumerate(progress(targets, desc="generate", enabled=args.progress)):
        # one seed per image: image i is reproducible on its own (same seed, same bytes)
        generator = torch.Generator().manual_seed(args.seed + i)
        result = marked_pipe(
            args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generator,
            height=args.size, width=args.size, output_type="pt",
        )
        save_image(result.images[0].float().clamp(0, 1).cpu(), target, overwrite=args.overwrite)
        if not args.quiet:
            progress_write(str(target))
    return EXIT_OK


def cmd_finetune_decoder(args) -> int:
    import shutil

    from .keys import load_key

    if len(args.key) > 1:
        raise ConfigError("finetune-decoder takes one key")
    key = load_key(args.key[0], method="stable_signature")
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise ConfigError(f"{args.output}: exists (pass --overwrite to replace it)")
    options = _pipeline_option(args)
    wm = _create("stable_signature", **({"finetune_steps": args.steps} if args.steps else {}), **options)
    cached = wm.decoder_cache_path(key)
    if cached.exists() and args.overwrite:
        cached.unlink()  # --overwrite: fine-tune again rather than reuse the cached decoder
    elif cached.exists():
        print(f"{cached}: already fine-tuned for this key (pass --overwrite to redo it)", file=sys.stderr)
    wm.watermarked_decoder(key, progress=args.progress is not False)
    from safetensors import safe_open

    with safe_open(str(cached), framework="pt") as f:
        meta = f.metadata() or {}
    print(f"decoder for key {key.fingerprint}: bit accuracy {meta.get('bit_accuracy', '?')}, "
          f"PSNR vs the original decoder {meta.get('psnr_db', '?')} dB on the training crops", file=sys.stderr)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, args.output)
    print(args.output or cached)
    return EXIT_OK


def _calibration_spec(args, key_path: str):
    from .calibration import key_calibration_path

    if args.calibration is not None:
        return None if args.calibration.lower() == "none" else args.calibration
    beside = key_calibration_path(key_path)
    return str(beside) if beside.exists() else "auto"


def cmd_verify(args) -> int:
    from .eval.run import process_state
    from .verify import VerifyPlan, verify_records

    spec, verifier = _verify_spec(args)
    if not args.inputs and args.files_from is None:
        raise ConfigError("give images or folders to verify, or --files-from LIST")
    if args.files_from not in (None, "-") and not os.path.isfile(args.files_from):
        raise InputError(f"{args.files_from}: no such list file")
    plan = VerifyPlan(args.inputs, args.files_from, args.output, spec, process_state())
    failures = 0
    records = verify_records(spec, plan.to_verify(), workers=args.workers, verifier=verifier)
    try:
        for path, record, error in progress(records, total=plan.total, desc="verify", enabled=args.progress):
            plan.append(record)
            failures += error is not None
            if args.json:
                progress_write(json.dumps(record))
            elif error is not None:
                error_line(path, error)
            else:
                _print_verify_line(record, args.alpha)
    finally:
        plan.close()  # also when this process failed: under accelerate the others wait for it
    if not plan.seen:
        raise InputError("no input images found")
    plan.finish()
    return EXIT_ERROR if failures else EXIT_OK


def _verify_spec(args):
    """(VerifySpec, Verifier) of a `wmkit verify` command line; a bad option, key or
    calibration fails here, before any image (or worker process)."""
    from .keys import load_key
    from .verify import Verifier, VerifySpec

    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha must lie in (0, 1), got {args.alpha}")
    config = _pipeline_option(args)
    wm = _create(args.method, **config)
    keys = [load_key(k, method=args.method, num_bits=wm.num_bits) for k in args.key]
    spec = VerifySpec(method=args.method, config=config, keys=tuple(keys), calibration=_calibration_spec(args, args.key[0]),
                      alpha=args.alpha, show_bits=args.show_bits, max_pixels=args.max_pixels)
    return spec, Verifier(spec, wm=wm)


def _print_verify_line(record: dict, alpha: float) -> None:
    verdict = "WATERMARKED" if record["detected"] else "not detected"
    parts = [f"{record['path']}: {verdict} (p={record['p_value']:.3g}"]
    if record.get("calibrated"):
        # bit schemes: the binomial test of fair coins; score schemes (tree_ring, ssl_zero_bit):
        # their uncalibrated analytic null (chi-square, hypercone), not a coin test
        label = "fair-coin p" if "bit_accuracy" in record else "analytic p"
        parts.append(f", {label}={record['p_value_analytic']:.3g}")
    if "bit_accuracy" in record:
        parts.append(f", bit accuracy {record['bit_accuracy']:.3f}")
    if "key_index" in record:
        parts.append(f", best key #{record['key_index']}")
    progress_write("".join(parts) + f", alpha={alpha:g})")


def cmd_calibrate(args) -> int:
    from .calibration.measure import calibrate_paths
    from .calibration import key_calibration_path

    if args.output is None and not args.key:
        raise ConfigError("say where to store the calibration: -o FILE, or -k KEY to store it beside the key")
    from .keys import load_key

    wm = _create(args.method, **_pipeline_option(args))
    keys = [load_key(k, method=args.method, num_bits=wm.num_bits) for k in args.key] if args.key else None
    output = Path(args.output) if args.output else key_calibration_path(args.key[0])
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output}: exists (pass --overwrite to replace it)")
    model, failures = calibrate_paths(
        wm, args.inputs, attacks=args.attacks, keys=keys, max_pixels=args.max_pixels, progress=args.progress
    )
    model.save(output, overwrite=args.overwrite)
    info = model.info
    if "dependence" in info:
        dep = info["dependence"]
        summary = (f"{info['num_images']} decodes, bit-one rate {info['bit_one_rate']:.3f}, "
                   f"pairwise agreement {dep['mean_pairwise_agreement']:.3f}, variance ratio {dep['variance_ratio']:.2f}")
    else:
        summary = f"{info['num_images']} scores, null z mean {info['z_mean']:.2f} sd {info['z_sd']:.2f} (1 and 0 if the analytic test were exact)"
    print(f"wrote {output}: {summary}", file=sys.stderr)
    return EXIT_ERROR if failures else EXIT_OK


def cmd_attack(args) -> int:
    from .attacks import SUITES, parse_attack
    from .imageio import iter_image_paths

    if args.list:
        from .registry import ATTACKS, list_attacks

        print("attacks (NAME[:PARAM] or NAME@STRENGTH, chain with +):")
        for name in list_attacks():
            doc = (ATTACKS.get(name).__doc__ or "").strip().splitlines()
            print(f"  {name:<16} {doc[0] if doc else ''}")
        print("suites:")
        for name, specs in SUITES.items():
            print(f"  {name:<16} {', '.join(specs) if specs else '(no attack)'}")
        return EXIT_OK
    if not args.attack or not args.output or not args.inputs:
        raise ConfigError("usage: wmkit attack -a ATTACK[:STRENGTH] IMAGE_OR_DIR... -o OUT_DIR (or --list)")
    import torch

    attack = parse_attack(args.attack, pipeline=args.pipeline)  # only pipeline attacks use (and load) it
    generator = torch.Generator().manual_seed(args.seed)
    paths = list(iter_image_paths(args.inputs))
    from .imageio import load_image

    return _map_files(args, paths, lambda image: attack(image[None], generator=generator)[0], desc="attack",
                      load=lambda path: load_image(path, max_pixels=args.max_pixels))


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    from .eval import DEFAULT_GENERATION_STEPS
    from .eval.run import DEFAULT_ATTACKS, DEFAULT_OFFLINE_PHOTOS, DEFAULT_PIPELINE, DEFAULT_SIZE, DEFAULT_THREADS

    p.add_argument("-m", "--method", dest="methods", action="append", required=True, metavar="METHOD", help="watermarking method to evaluate (repeat for several)")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="unwatermarked test images (default: offline sample photos)")
    p.add_argument("--attacks", action="append", default=None, metavar="SUITE_OR_SPEC[,SPEC...]", help=f"attack suites and specs, comma-separated (default {DEFAULT_ATTACKS}; see `wmkit attack --list`); 'none' is always included")
    p.add_argument("--offline-photos", type=int, default=None, metavar="N", help=f"without IMAGE_OR_DIR: N crops of the offline evaluation photos (default {DEFAULT_OFFLINE_PHOTOS})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"side of the offline photos in pixels, and of the images --forgery squares (default {DEFAULT_SIZE})")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder: results.jsonl, summary.json, summary.md, plots")
    p.add_argument("--seed", type=int, default=0, help="seeds the keys, the attacks and the offline photos (default 0)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty REPORT_DIR (an earlier report there is replaced)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads per process (default 1: results then do not depend on how the run is sharded)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="diffusion pipeline for generative attacks (regen, rinse, vae_regen, paraphrase, adv_embed) and generation-time methods (tree_ring, gaussian_shading, stable_signature): 'tiny' (default) or a local diffusers folder; loaded only if needed")
    p.add_argument("--prompt", dest="prompts", action="append", default=[], metavar="TEXT", help="prompt for the generations that generation-time methods are evaluated on (repeat for several; they cycle; default: a few built-in subjects)")
    p.add_argument("--generation-steps", type=int, default=DEFAULT_GENERATION_STEPS, help=f"inference steps of those generations (default {DEFAULT_GENERATION_STEPS})")
    p.add_argument("--forgery", type=int, default=None, metavar="N", help="also run the averaging forgery per post-hoc method on the run's first 2N images, squared to --size (N marked to estimate the mark from, N clean ones to forge), and report the false-attribution rate")


def cmd_eval(args) -> int:
    from .eval.run import DEFAULT_ATTACKS, EvalConfig, process_state, run_eval

    state = process_state()

    def report_bad_image(item, message: str) -> None:
        error_line(item.image_id, message)

    try:
        config = EvalConfig(
            methods=args.methods, output=args.output, attacks=args.attacks or DEFAULT_ATTACKS, inputs=args.inputs,
            offline_photos=args.offline_photos, size=args.size, seed=args.seed, overwrite=args.overwrite,
            max_pixels=args.max_pixels, threads=args.threads, pipeline=args.pipeline, forgery=args.forgery,
            prompts=args.prompts, generation_steps=args.generation_steps,
        )
        outcome = run_eval(config, progress=args.progress, on_error=report_bad_image, state=state)
    finally:
        if hasattr(state, "destroy_process_group"):  # the CLI owns its process group
            state.destroy_process_group()
    if outcome.is_main_process:
        summary = outcome.summary
        counts = summary["counts"]
        for warning in summary["calibration_warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"evaluated {counts['images'] - counts['failed_images']} images x {len(summary['methods'])} methods x "
            f"{len(summary['config']['attacks'])} attack settings ({counts['records']} records) "
            f"on {summary['config']['processes']} process(es)",
            file=sys.stderr,
        )
        for path in outcome.files:
            print(path)
    return 1 if outcome.failed_images else 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(num_images=args.images, size=args.size, output=args.output, methods=args.methods, full=args.full)


# -- parser ------------------------------------------------------------------------
# long by nature: one add_argument per option of every command, in the order `--help` lists them
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmkit", description="Invisible watermarks: embed, attack, verify.")
    parser.add_argument("--version", action="version", version="wmkit " + __import__("wmkit").__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list watermarkers and attacks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("keygen", help="make a secret key file")
    p.add_argument("-m", "--method", required=True)
    p.add_argument("--seed", type=int, default=None, help="reproducible key (tests, demos); omit for a random secret")
    p.add_argument("--message", default=None, help="payload bits for multi-bit schemes, e.g. 0101... (exact length)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--force", action="store_true", help="keep a --message that key screening rejects")
    p.set_defaults(func=cmd_keygen)

    def images_args(p, *, output: bool):
        p.add_argument("inputs", nargs="+" if output else "+", metavar="IMAGE_OR_DIR")
        if output:
            p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
            p.add_argument("--format", default="png", choices=["png", "webp", "jpg", "bmp", "tiff"], help="output format (default png)")
            p.add_argument("--overwrite", action="store_true", help="allow replacing existing files, inputs included")
            p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
        _add_progress(p)

    p = sub.add_parser("embed", help="watermark images post hoc")
    _add_common(p)
    images_args(p, output=True)
    _add_pipeline_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("finetune-decoder", help="stable_signature: fine-tune the pipeline's VAE decoder for a key (cached; used by embed/generate)")
    p.add_argument("-k", "--key", required=True, action="append", help="a stable_signature key file")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimisation steps (default 200; the paper uses 100, see README)")
    p.add_argument("-o", "--output", default=None, help="also copy the decoder (safetensors) here")
    p.add_argument("--overwrite", action="store_true", help="fine-tune again even if the cache has this key's decoder")
    p.add_argument("--pipeline", default=None, help="'tiny' (default) or a local diffusers folder")
    p.add_argument("--extractor", default=None, help="'tiny' (default), a wmkit HiDDeN folder or a TorchScript extractor")
    p.set_defaults(method="stable_signature")
    _add_progress(p)
    p.set_defaults(func=cmd_finetune_decoder)

    p = sub.add_parser("generate", help="generate watermarked images with a diffusion pipeline (generation-time methods)")
    _add_common(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("-n", "--num-images", type=_positive_int, default=1)
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed S + i and is named after it")
    p.add_argument("--steps", type=_positive_int, default=25, help="sampling steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--size", type=_positive_int, default=None, help="image side in pixels (default: the pipeline's)")
    p.add_argument("--format", default="png", choices=["png", "webp", "jpg", "bmp", "tiff"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_pipeline_options(p)
    _add_progress(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("verify", help="test images for a watermark; one p-value per image")
    _add_common(p)
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR")
    p.add_argument("--files-from", metavar="LIST", default=None,
                   help="also verify the image paths in LIST, one per line ('-': standard input), read as they are needed")
    p.add_argument("-o", "--output", metavar="RESULTS.jsonl", default=None,
                   help="append one JSON record per image to this file as it is verified; run again with the same "
                        "file to resume: images already recorded there are skipped")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes that verify images side by side (default 1; the number of cores is the fastest); "
                        "the output is the same, in the same order")
    _add_progress(p)
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"significance level of the decision (default {DEFAULT_ALPHA:g})")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    p.add_argument("--show-bits", action="store_true",
                   help="add the decoded bits to --json records (they let anyone who sees them forge a public-embedder mark)")
    p.add_argument("--calibration", default=None, help="null calibration file, or 'none' for the analytic p-value")
    _add_pipeline_options(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("calibrate", help="fit the null of a scheme's detector on unwatermarked images")
    p.add_argument("-m", "--method", required=True)
    p.add_argument("-k", "--key", action="append", default=None, help="store the calibration beside this key")
    p.add_argument("-o", "--output", default=None, help="calibration file to write")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--attacks", default="calibration", help="attack suite applied too, so the null covers attacked images ('none' for clean only)")
    _add_pipeline_options(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS)
    _add_progress(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("attack", help="apply an attack to images")
    p.add_argument("-a", "--attack", default=None, help="e.g. jpeg:50, rotate:15, center_crop:0.5+jpeg:80, blur@0.5")
    p.add_argument("--list", action="store_true", help="list attacks and suites")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR")
    p.add_argument("-o", "--output", default=None, metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="png", choices=["png", "webp", "jpg", "bmp", "tiff"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--pipeline", default="tiny", help="diffusion pipeline for generative attacks (regen, rinse, vae_regen, paraphrase, adv_embed): 'tiny' (default) or a local diffusers folder")
    _add_progress(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("eval", help="robustness and calibration report: methods x attacks x images")
    add_eval_arguments(p)
    _add_progress(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the main job end to end on offline sample photos, in a few minutes")
    p.add_argument("--images", type=_positive_int, default=None, help="images per scheme (default 3; 8 with --full)")
    p.add_argument("--size", type=_positive_int, default=256, help="side of the sample photos in pixels (default 256)")
    p.add_argument("--full", action="store_true", help="the longer tour: more images, harder attacks (JPEG 50, resize, rotation, crop 50%%)")
    p.add_argument("-o", "--output", default="wmkit-demo", metavar="OUT_DIR",
                   help="folder for heatmap.png, demo.json and the marked images (default wmkit-demo; an earlier demo's files are replaced)")
    p.add_argument("-m", "--method", dest="methods", action="append", default=None, metavar="METHOD", help="only these methods (repeat; default all)")
    _add_progress(p)
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .memory import reuse_freed_memory
    from .progress import set_default

    reuse_freed_memory()  # the command's own process: see wmkit/memory.py

    set_default(getattr(args, "progress", None))
    try:
        return args.func(args)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WmkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
        if os.environ.get("WMKIT_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (set WMKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        set_default(None)


if __name__ == "__main__":
    sys.exit(main())
