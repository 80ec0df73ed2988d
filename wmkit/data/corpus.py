"""The training corpus: photographs and artwork from Debian packages, built on demand.

    python -m wmkit.data corpus build DIR      # about a minute and 250 MB of packages
    python -m wmkit.data corpus check DIR      # files present, digests right, no split leak

The packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a
scratch folder (nothing is installed system-wide, nothing is fetched at run time). Of every
distinct image one copy is kept, the largest: a wallpaper shipped in a dozen resolutions is
one image. ``DIR/manifest.json`` records, per image: package, version, licence (from the
package's copyright file), original path, sha256, size, photo or artwork, the *source* it
belongs to and its split. Splits go by source (every rendition and variant of one picture,
e.g. a wallpaper's light and dark versions, lands on one side), chosen by a hash of the
source's name so they stay put as the corpus grows. The bundled *calibration* photos join
the training split; the *evaluation* photos the benchmarks use never enter the corpus, and
neither does any image that looks like one of them.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import ConfigError, InputError

# Debian packages that ship photographs or photographic artwork (bookworm names).
PACKAGES = (
    "plasma-workspace-wallpapers", "mate-backgrounds", "ukui-wallpapers", "gnome-backgrounds",
    "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "desktop-base",
    "sway-backgrounds",
)
# Images in those packages that are photographs (looked at one by one; the rest is
# artwork: renders, gradients, drawings), by package and source key (`_source_key`).
PHOTOGRAPHS: dict[str, set[str]] = {}  # filled at the end of the module

FORMAT, VERSION = "wmkit-corpus", 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MIN_SIDE = 400  # smaller files are previews or icons
VALIDATION_SHARE = 0.15
SPLITS = ("train", "validation")
# two files are one image when their thumbnails correlate this well at the same aspect ratio
DUPLICATE_CORRELATION = 0.95


@dataclass
class Entry:
    file: str  # relative to the corpus folder
    source_package: str
    package_version: str
    licence: str
    original_path: str
    sha256: str
    width: int
    height: int
    bytes: int
    kind: str  # "photo" or "artwork"
    source: str  # every file of one picture shares it; splits go by it
    split: str


# -- what one picture is --------------------------------------------------------------------
_RESOLUTION = re.compile(r"[-_ ]?\d{3,5}x\d{3,5}|[-_ ]?(4x3|16x9|16x10|5x4)\b", re.IGNORECASE)
_VARIANT = re.compile(r"([-_](l|d|light|dark|day|night|portrait|no[-_]logo))+$", re.IGNORECASE)


def _source_key(original_path: str) -> str:
    """The picture a file is a rendition of, from its path: a Plasma wallpaper folder
    (``wallpapers/NAME/contents/images*/WxH.png``), a ``*-theme`` folder, or the file name
    without resolution and light/dark/portrait suffixes."""
    parts = Path(original_path).parts
    if "contents" in parts:
        return "/".join(parts[: parts.index("contents")][-1:])
    themes = [p for p in parts if p.endswith("-theme")]
    if themes:
        return themes[0]
    if "themes" in parts[:-2]:  # e.g. plymouth/themes/NAME/background.png
        return parts[parts.index("themes") + 1] + "-theme"
    stem = _RESOLUTION.sub("", Path(original_path).stem)
    return _VARIANT.sub("", stem).lower() or Path(original_path).stem.lower()


def _variant_key(original_path: str) -> str:
    """The same picture in another resolution or aspect ratio has the same key; a light and a
    dark version of it do not (both are kept, as one source)."""
    parts = Path(original_path).parts
    if "contents" in parts:  # NAME/contents/images or NAME/contents/images_dark
        i = parts.index("contents")
        return "/".join(parts[i - 1:i + 2])
    stem = re.sub(r"[-_]portrait$", "", _RESOLUTION.sub("", Path(original_path).stem), flags=re.IGNORECASE)
    return str(Path(original_path).parent / stem).lower()


def split_of(source: str) -> str:
    """train or validation, from a hash of the source's name (stable as the corpus grows)."""
    value = int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) / 2**32
    return "validation" if value < VALIDATION_SHARE else "train"


def _signature(path: Path) -> tuple[float, np.ndarray]:
    """(aspect ratio, a normalised 16 x 16 grey thumbnail): near-identical for renditions of one image."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("L", (64, 64))  # JPEG: decode at a reduced size
        aspect = im.size[0] / im.size[1]
        thumb = np.asarray(im.convert("L").resize((16, 16), Image.BOX), dtype=np.float64).ravel()
    thumb = thumb - thumb.mean()
    return aspect, thumb / (np.linalg.norm(thumb) + 1e-9)


def _same_image(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> bool:
    return abs(a[0] / b[0] - 1) < 0.03 and float(a[1] @ b[1]) > DUPLICATE_CORRELATION


# -- licences -------------------------------------------------------------------------------
def _copyright_stanzas(text: str) -> list[tuple[list[str], str]]:
    """(Files patterns, License name) of each DEP-5 stanza that has both."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+(?:\n[ \t]+.+)*)", block, re.MULTILINE)
        licence = re.search(r"^License:\s*(.+)", block, re.MULTILINE)
        if files and licence:
            stanzas.append((files.group(1).split(), licence.group(1).strip()))
    return stanzas


def licence_of(original_path: str, copyright_text: str) -> str:
    """The licence the package's copyright file gives this file (DEP-5: the last stanza whose
    pattern matches the end of its path, or names its file), else every licence it names."""
    found = None
    name = Path(original_path).name
    for patterns, licence in _copyright_stanzas(copyright_text):
        for pattern in patterns:
            base = pattern.rsplit("/", 1)[-1]
            if pattern == "*" or fnmatch.fnmatch(original_path, "*" + pattern) or (
                    not any(c in base for c in "*?[") and base == name):
                found = licence
    if found:
        return found
    named = sorted({m.strip() for m in re.findall(r"^License:\s*(.+)", copyright_text, re.MULTILINE)})
    return " / ".join(named) if named else "see the package's copyright file"


# -- building -------------------------------------------------------------------------------
def _run(command: list[str], cwd: Optional[Path] = None) -> str:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ConfigError(f"building the corpus needs `{command[0]}` (Debian's apt and dpkg)") from None
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result.stdout


def fetch_package(package: str, cache: Path) -> Path:
    """The package's .deb in ``cache``, downloaded with apt-get unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    existing = sorted(cache.glob(f"{package}_*.deb"))
    if not existing:
        _run(["apt-get", "download", package], cwd=cache)
        existing = sorted(cache.glob(f"{package}_*.deb"))
    if not existing:
        raise ConfigError(f"apt-get download {package} left no .deb in {cache}")
    return existing[-1]


def _package_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Candidate:
    path: Path
    original_path: str
    width: int
    height: int
    signature: tuple[float, np.ndarray]


def _candidates(root: Path) -> list[_Candidate]:
    from PIL import Image

    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or path.is_symlink():
            continue
        try:
            with Image.open(path) as im:
                width, height = im.size
            if min(width, height) < MIN_SIDE:
                continue
            found.append(_Candidate(path, "/" + str(path.relative_to(root)), width, height, _signature(path)))
        except (OSError, ValueError):
            print(f"warning: {path.relative_to(root)}: unreadable image, skipped", file=sys.stderr)
    return found


def _distinct(candidates: list[_Candidate], keep: list[_Candidate]) -> list[_Candidate]:
    """The largest file of every distinct image (one per variant key, none that looks like
    another kept file), none of them like one in ``keep`` already."""
    chosen: list[_Candidate] = []
    variants: set[str] = set()
    for c in sorted(candidates, key=lambda c: (-c.width * c.height, c.original_path)):
        variant = _variant_key(c.original_path)
        if variant not in variants and not any(_same_image(c.signature, k.signature) for k in chosen + keep):
            chosen.append(c)
            variants.add(variant)
    return chosen


def _kind(package: str, source: str) -> str:
    return "photo" if source in PHOTOGRAPHS.get(package, set()) else "artwork"


def _bundled_entries(folder: Path, images: Path, taken: list[_Candidate]) -> list[Entry]:
    """The bundled calibration photos (scikit-image), always on the training side."""
    import skimage

    from . import PHOTOS, _photo_path

    entries = []
    for package, name in PHOTOS["calibration"]:
        path = _photo_path(package, name)
        target = images / f"{package}-{name}"
        shutil.copyfile(path, target)
        from PIL import Image

        with Image.open(target) as im:
            width, height = im.size
        taken.append(_Candidate(target, name, width, height, _signature(target)))
        entries.append(Entry(str(target.relative_to(folder)), "scikit-image", skimage.__version__,
                             "see scikit-image's data README (public domain or CC per image)", f"skimage/data/{name}",
                             _sha256(target), width, height, target.stat().st_size, "photo" if name != "page.png" else "artwork",
                             f"bundled:{name}", "train"))
    return entries


def _evaluation_signatures() -> list[_Candidate]:
    from . import photo_paths

    return [_Candidate(p, p.name, 0, 0, _signature(p)) for p in photo_paths("evaluation")]


def build_corpus(folder: str | os.PathLike, packages: Iterable[str] = PACKAGES, *, cache: Optional[Path] = None,
                 progress: bool = True) -> dict:
    """Fetch, unpack, deduplicate and split; write ``folder/images/`` and ``folder/manifest.json``.

    ``cache`` (default ``folder/packages``) keeps the .deb files, so a rebuild fetches nothing.
    Refuses a folder that holds a corpus already (remove it first)."""
    from ..progress import progress as progress_display

    folder = Path(folder)
    if (folder / "manifest.json").exists():
        raise ConfigError(f"{folder} holds a corpus already (manifest.json): remove it or choose another folder")
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    cache = cache or folder / "packages"
    (folder / "licences").mkdir(exist_ok=True)
    taken = _evaluation_signatures()  # nothing like an evaluation photo enters the corpus
    excluded = len(taken)
    entries = _bundled_entries(folder, images, taken)
    dropped_like_evaluation = 0
    for package in progress_display(list(packages), desc="corpus", unit="pkg", enabled=None if progress else False):
        deb = fetch_package(package, cache)
        version = _package_version(deb)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".unpack-") as scratch:
            _run(["dpkg-deb", "-x", str(deb), scratch])
            root = Path(scratch)
            copyright_file = root / "usr/share/doc" / package / "copyright"
            copyright_text = copyright_file.read_text(errors="replace") if copyright_file.is_file() else ""
            (folder / "licences" / f"{package}.copyright").write_text(copyright_text)
            candidates = _candidates(root)
            distinct = _distinct(candidates, taken)
            dropped_like_evaluation += sum(
                any(_same_image(c.signature, e.signature) for e in taken[:excluded]) for c in candidates)
            for c in distinct:
                source = _source_key(c.original_path)
                digest = _sha256(c.path)
                target = images / f"{package}-{digest[:12]}{c.path.suffix.lower()}"
                shutil.copyfile(c.path, target)
                full_source = f"{package}:{source}"
                entries.append(Entry(str(target.relative_to(folder)), package, version,
                                     licence_of(c.original_path.lstrip("/"), copyright_text), c.original_path,
                                     digest, c.width, c.height, target.stat().st_size, _kind(package, source),
                                     full_source, split_of(full_source)))
                taken.append(_Candidate(target, c.original_path, c.width, c.height, c.signature))
    manifest = {"format": FORMAT, "version": VERSION, "packages": list(packages),
                "excluded_like_evaluation_photos": dropped_like_evaluation,
                "counts": _counts(entries), "images": [asdict(e) for e in entries]}
    _write_json_atomic(folder / "manifest.json", manifest)
    return manifest


def _counts(entries: list[Entry]) -> dict:
    counts: dict = {"total": len(entries)}
    for e in entries:
        by_package = counts.setdefault("by_package", {}).setdefault(e.source_package, {"photo": 0, "artwork": 0})
        by_package[e.kind] += 1
        counts.setdefault(e.split, {"photo": 0, "artwork": 0})[e.kind] += 1
    counts["photos"] = sum(e.kind == "photo" for e in entries)
    counts["sources"] = len({e.source for e in entries})
    return counts


def _write_json_atomic(path: Path, content: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(content, f, indent=1)
        f.write("\n")
    os.replace(f.name, path)


# -- reading --------------------------------------------------------------------------------
def load_manifest(folder: str | os.PathLike) -> list[Entry]:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path}: no corpus manifest (build one with `python -m wmkit.data corpus build {folder}`)")
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise InputError(f"{path}: not a wmkit corpus manifest")
        return [Entry(**item) for item in manifest["images"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: unreadable corpus manifest ({exc})") from None


def check_corpus(folder: str | os.PathLike, *, digests: bool = True) -> list[str]:
    """Problems with a corpus (empty list: none): missing or altered files, a source on both
    sides of the split, an unknown split or kind, a duplicate file."""
    folder = Path(folder)
    entries = load_manifest(folder)
    problems = []
    sides: dict[str, set[str]] = {}
    seen: dict[str, str] = {}
    for e in entries:
        sides.setdefault(e.source, set()).add(e.split)
        if e.split not in SPLITS:
            problems.append(f"{e.file}: unknown split '{e.split}'")
        if e.kind not in ("photo", "artwork"):
            problems.append(f"{e.file}: unknown kind '{e.kind}'")
        if e.sha256 in seen:
            problems.append(f"{e.file}: the same file as {seen[e.sha256]}")
        seen[e.sha256] = e.file
        path = folder / e.file
        if not path.is_file():
            problems.append(f"{e.file}: missing")
        elif digests and _sha256(path) != e.sha256:
            problems.append(f"{e.file}: sha256 differs from the manifest")
    problems += [f"source {s}: on both sides of the split" for s, v in sides.items() if len(v) > 1]
    return problems


def corpus_paths(folder: str | os.PathLike, split: str = "train", kind: Optional[str] = None, *,
                 bundled: bool = True) -> list[Path]:
    """The image files of one split (and kind), in manifest order; ``bundled=False`` leaves out
    the bundled calibration photos the build adds (for checks of what was fitted on them)."""
    if split not in SPLITS + ("all",):
        raise ConfigError(f"unknown split '{split}' (train, validation or all)")
    folder = Path(folder)
    return [folder / e.file for e in load_manifest(folder)
            if (split == "all" or e.split == split) and (kind is None or e.kind == kind)
            and (bundled or not e.source.startswith("bundled:"))]


PHOTOGRAPHS.update({
    "plasma-workspace-wallpapers": {"MilkyWay", "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                                    "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"},
    "mate-backgrounds": {"wood", "aqua", "garden", "ladybird", "twowings", "yellowflower", "storm", "blinds", "raindrops",
                         "freshflower", "dune", "greenmeadow"},
    "lomiri-wallpapers-16.04": {
        "seeding_by_clements_engelhardt", "dragonfly_by_bolly", "sunset_by_aitzol_berasategi", "bridge_by_sander_klootwijk",
        "wine_by_jakkub_mede", "picosdeeuropa_by_aitzol_berasategi", "aitzgorri_by_aitzol_berasategi",
        "friends_by_aitzol_berasategi", "life_by_aitzol_berasategi", "analogpattern_by_peter_nerlich",
        "free_by_peter_nerlich", "greentock_by_peter_nerlich", "picture_0b_by_freespace", "picture_1a_by_freespace"},
    "lomiri-wallpapers-20.04": {"kleiber_by_lukas_baubkus"},
})
