"""python -m wmkit.data: the training corpus and the bundled photos.

    python -m wmkit.data corpus build DIR [--package NAME ...]   fetch, deduplicate, split, write DIR/manifest.json
    python -m wmkit.data corpus check DIR                        files, digests, no source on both sides
    python -m wmkit.data corpus info DIR                         counts by package, kind and split
    python -m wmkit.data corpus pack DIR OUT [--size 256] [--count 4000] [--max-mib 60]
    python -m wmkit.data copy FOLDER [--group calibration]       copy a bundled photo group out
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import WmkitError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wmkit.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="the training corpus").add_subparsers(dest="action", required=True)
    build = corpus.add_parser("build", help="fetch the packages and write the corpus")
    build.add_argument("folder")
    build.add_argument("--package", action="append", default=None,
                       help="a Debian package to take images from (repeatable; default: the built-in list)")
    build.add_argument("--cache", default=None, help="where the .deb files are kept (default FOLDER/packages)")
    for name in ("check", "info"):
        corpus.add_parser(name).add_argument("folder")
    pack = corpus.add_parser("pack", help="write a capped set of training crops (for a GPU machine)")
    pack.add_argument("folder")
    pack.add_argument("out")
    pack.add_argument("--size", type=int, default=256)
    pack.add_argument("--count", type=int, default=4000)
    pack.add_argument("--max-mib", type=float, default=60.0)
    pack.add_argument("--seed", type=int, default=0)
    for sub in (build, pack):
        sub.add_argument("--no-progress", action="store_true")
    copy = commands.add_parser("copy", help="copy a bundled photo group into a folder")
    copy.add_argument("folder")
    copy.add_argument("--group", default="calibration", choices=["calibration", "evaluation", "all"])
    return parser


def _positive(parser: argparse.ArgumentParser, **values) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "copy":
            from . import copy_photos

            print(f"copied {len(copy_photos(args.group, Path(args.folder)))} photos to {args.folder}")
            return 0
        from . import corpus

        if args.action == "build":
            manifest = corpus.build_corpus(args.folder, args.package or corpus.PACKAGES,
                                           cache=Path(args.cache) if args.cache else None, progress=not args.no_progress)
            counts = manifest["counts"]
            print(f"{counts['total']} images ({counts['photos']} photographs) from {counts['sources']} sources "
                  f"in {args.folder}; manifest: {Path(args.folder) / 'manifest.json'}")
        elif args.action == "check":
            problems = corpus.check_corpus(args.folder)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"{args.folder}: {len(corpus.load_manifest(args.folder))} images, all present and unaltered, splits clean")
        elif args.action == "info":
            print(json.dumps(corpus._counts(corpus.load_manifest(args.folder)), indent=1))
        elif args.action == "pack":
            _positive(parser, size=args.size, count=args.count, max_mib=args.max_mib)
            from .sampler import pack_training_set

            pack = pack_training_set(args.folder, args.out, size=args.size, count=args.count, max_mib=args.max_mib,
                                     seed=args.seed, progress=not args.no_progress)
            print(f"{len(pack['files'])} crops of {pack['size']} px, {pack['mib']} MiB, in {args.out}")
    except WmkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
