"""The training corpus, procedural images and the crop sampler, on a fixture package built here.

The fixture is a real .deb (dpkg-deb --build) holding bundled photos in several resolutions,
a dark variant, an evaluation photo and a DEP-5 copyright file; placed in the cache folder,
the builder takes it instead of fetching, so these tests need no network and no corpus.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from wmkit import data
from wmkit.data import corpus
from wmkit.data.procedural import procedural_image
from wmkit.data.sampler import load_sources, pack_training_set, training_crops
from wmkit.errors import ConfigError

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files: backgrounds/coffee_by_Someone.jpg
Copyright: someone else
License: CC-BY-4.0
"""

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")


def _save(image, target: Path, size: tuple[int, int]) -> None:
    """Save a photo file, or a procedural image (a seed), resized to ``size``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, int):
        array = procedural_image(256, image, "dead_leaves").permute(1, 2, 0).mul(255).round().byte().numpy()
        Image.fromarray(array).resize(size, Image.BICUBIC).save(target)
        return
    with Image.open(image) as im:
        im.convert("RGB").resize(size, Image.BICUBIC).save(target)


def build_fixture_package(folder: Path, name: str = "wmkit-fixture-wallpapers") -> Path:
    """A .deb like the wallpaper packages: Plasma-style renditions, a dark variant, a picture in
    two sizes (procedural images stand in for photos), a bundled calibration photo (kept once,
    as bundled), an evaluation photo that must be left out, and a copyright file."""
    root = folder / "root"
    share = root / "usr/share"
    photos = {p.name: p for p in data.photo_paths("all")}
    for size in [(1024, 640), (800, 500), (640, 1024)]:  # one picture, three renditions
        _save(1, share / f"wallpapers/Rocket/contents/images/{size[0]}x{size[1]}.png", size)
    _save(2, share / "wallpapers/Rocket/contents/images_dark/1024x640.png", (1024, 640))
    _save(3, share / "backgrounds/coffee_by_Someone.jpg", (900, 600))
    _save(3, share / "backgrounds/coffee_by_Someone_1800x1200.jpg", (1800, 1200))
    _save(4, share / "backgrounds/tiny-brick.png", (300, 300))  # under MIN_SIDE: a preview
    _save(photos["coins.png"], share / "backgrounds/coins.png", (768, 606))  # a bundled calibration photo
    _save(photos["astronaut.png"], share / "backgrounds/astronaut.png", (512, 512))  # an evaluation photo
    doc = share / f"doc/{name}"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: fixture\n")
    cache = folder / "cache"
    cache.mkdir()
    deb = cache / f"{name}_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(root), str(deb)], check=True, capture_output=True)
    return cache


@pytest.fixture(scope="module")
def fixture_corpus(tmp_path_factory):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs Debian's dpkg-deb")
    folder = tmp_path_factory.mktemp("corpus")
    cache = build_fixture_package(folder)
    manifest = corpus.build_corpus(folder / "corpus", ["wmkit-fixture-wallpapers"], cache=cache, progress=False)
    return folder / "corpus", manifest


@needs_dpkg
def test_build_keeps_one_copy_of_each_image_the_largest_and_leaves_evaluation_photos_out(fixture_corpus):
    folder, manifest = fixture_corpus
    from_package = [e for e in manifest["images"] if e["source_package"] == "wmkit-fixture-wallpapers"]
    paths = sorted(e["original_path"] for e in from_package)
    assert paths == ["/usr/share/backgrounds/coffee_by_Someone_1800x1200.jpg",
                     "/usr/share/wallpapers/Rocket/contents/images/1024x640.png",
                     "/usr/share/wallpapers/Rocket/contents/images_dark/1024x640.png"]
    by_path = {e["original_path"]: e for e in from_package}
    coffee = by_path["/usr/share/backgrounds/coffee_by_Someone_1800x1200.jpg"]
    assert (coffee["width"], coffee["height"]) == (1800, 1200)
    # the light and dark versions are two images of one source, on one side of the split
    rocket = [e for e in from_package if "Rocket" in e["original_path"]]
    assert len({e["source"] for e in rocket}) == 1 and len({e["split"] for e in rocket}) == 1
    assert all(e["package_version"] == "1.2-3" for e in from_package)
    assert manifest["excluded_like_evaluation_photos"] >= 1
    # the bundled calibration photos join the training split; no evaluation photo anywhere
    bundled = [e for e in manifest["images"] if e["source_package"] == "scikit-image"]
    assert len(bundled) == len(data.PHOTOS["calibration"]) and all(e["split"] == "train" for e in bundled)
    evaluation_names = {name for _, name in data.PHOTOS["evaluation"]}
    assert not any(Path(e["original_path"]).name in evaluation_names for e in manifest["images"])
    assert corpus.check_corpus(folder) == []


@needs_dpkg
def test_licences_come_from_the_copyright_file_most_specific_stanza_first(fixture_corpus):
    _, manifest = fixture_corpus
    licences = {Path(e["original_path"]).name: e["licence"] for e in manifest["images"]
                if e["source_package"] == "wmkit-fixture-wallpapers"}
    assert licences["1024x640.png"] == "GPL-2+"
    # the stanza names coffee_by_Someone.jpg; the kept file is its 1800x1200 rendition
    assert licences["coffee_by_Someone_1800x1200.jpg"] == "GPL-2+"
    assert corpus.licence_of("usr/share/backgrounds/coffee_by_Someone.jpg", COPYRIGHT) == "CC-BY-4.0"
    assert corpus.licence_of("anything", "no fields here") == "see the package's copyright file"


@needs_dpkg
def test_manifest_entries_match_their_files(fixture_corpus):
    folder, manifest = fixture_corpus
    import hashlib

    for e in manifest["images"]:
        path = folder / e["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"]
        assert path.stat().st_size == e["bytes"]
        with Image.open(path) as im:
            assert im.size == (e["width"], e["height"])
        assert e["kind"] in ("photo", "artwork") and e["split"] in corpus.SPLITS and e["licence"]


@needs_dpkg
def test_check_finds_altered_files_and_a_source_on_both_sides(fixture_corpus, tmp_path):
    folder, _ = fixture_corpus
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    first = manifest["images"][0]
    (copy / first["file"]).write_bytes(b"not the image")
    twin = dict(manifest["images"][1], split="validation" if manifest["images"][1]["split"] == "train" else "train",
                file=manifest["images"][2]["file"], sha256=manifest["images"][2]["sha256"] + "0")
    manifest["images"].append(twin)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = corpus.check_corpus(copy)
    assert any("sha256 differs" in p for p in problems)
    assert any("on both sides of the split" in p for p in problems)
    # and the command line says so with exit status 1
    from wmkit.data.__main__ import main

    assert main(["corpus", "check", str(copy)]) == 1
    assert main(["corpus", "check", str(folder)]) == 0


@needs_dpkg
def test_build_refuses_a_folder_that_holds_a_corpus(fixture_corpus):
    folder, _ = fixture_corpus
    with pytest.raises(ConfigError, match="holds a corpus already"):
        corpus.build_corpus(folder, [], progress=False)


def test_renditions_share_a_variant_and_variants_share_a_source():
    plasma = "/usr/share/wallpapers/Flow/contents/images/5120x2880.jpg"
    portrait = "/usr/share/wallpapers/Flow/contents/images/720x1440.jpg"
    dark = "/usr/share/wallpapers/Flow/contents/images_dark/5120x2880.jpg"
    assert corpus._variant_key(plasma) == corpus._variant_key(portrait) != corpus._variant_key(dark)
    assert corpus._source_key(plasma) == corpus._source_key(dark) == "Flow"
    assert corpus._source_key("/x/adwaita-l.webp") == corpus._source_key("/x/adwaita-d.webp") == "adwaita"
    assert (corpus._variant_key("/s/Sway_Wallpaper_Blue_2048x1536_Portrait.png")
            == corpus._variant_key("/s/Sway_Wallpaper_Blue_1920x1080.png"))
    assert corpus._source_key("/d/joy-theme/grub/grub-4x3.png") == corpus._source_key("/p/themes/joy/background.png")


def test_splits_are_a_stable_function_of_the_source():
    names = [f"pkg:image{i}" for i in range(400)]
    splits = [corpus.split_of(n) for n in names]
    assert splits == [corpus.split_of(n) for n in names]
    share = splits.count("validation") / len(splits)
    assert abs(share - corpus.VALIDATION_SHARE) < 0.06


def test_procedural_images_are_seeded_and_differ_by_seed():
    for kind in ("dead_leaves", "fractal_noise"):
        a, b, c = (procedural_image(64, seed, kind) for seed in (1, 1, 2))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.shape == (3, 64, 64) and 0 <= float(a.min()) and float(a.max()) <= 1
        assert torch.equal(a, a.mul(255).round().div(255))  # 8-bit values, like a saved file
        assert float(a.std()) > 0.05  # not flat
    with pytest.raises(ConfigError, match="unknown procedural kind"):
        procedural_image(32, 0, "plasma")


def test_training_crops_are_seeded_and_match_the_bundled_crops_without_augmentation():
    photos = data.load_photos("calibration")[:3]
    a = training_crops(8, 48, seed=3, sources=photos, min_scale=0.35, procedural_share=0.25, jitter=0.1)
    b = training_crops(8, 48, seed=3, sources=photos, min_scale=0.35, procedural_share=0.25, jitter=0.1)
    c = training_crops(8, 48, seed=4, sources=photos, min_scale=0.35, procedural_share=0.25, jitter=0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = training_crops(6, 48, seed=5, sources=photos, min_scale=0.35, flip=False)
    assert torch.allclose(plain, torch.stack(data.crops(6, size=48, seed=5, photos=photos)), atol=1 / 255)
    only_procedural = training_crops(3, 32, seed=1, procedural_share=1.0)  # needs no photos at all
    assert only_procedural.shape == (3, 3, 32, 32)
    with pytest.raises(ConfigError):
        training_crops(2, 32, sources=photos, procedural_share=1.5)


@needs_dpkg
def test_pack_stays_under_its_cap_and_recipes_read_it(fixture_corpus, tmp_path):
    folder, _ = fixture_corpus
    pack = pack_training_set(folder, tmp_path / "pack", size=64, count=40, max_mib=0.05, progress=False)
    files = [tmp_path / "pack" / name for name in pack["files"]]
    assert 0 < len(files) < 40  # the cap stopped it
    assert sum(f.stat().st_size for f in files) <= 0.05 * 2**20
    assert sorted(p.name for p in (tmp_path / "pack").glob("*.jpg")) == sorted(pack["files"])
    sources = load_sources(tmp_path / "pack")
    assert len(sources) == len(files) and sources[0].shape == (3, 64, 64)
    with pytest.raises(ConfigError, match="holds a packed set"):
        pack_training_set(folder, tmp_path / "pack", size=64, count=4, progress=False)


@needs_dpkg
def test_hidden_recipe_trains_on_the_corpus_and_records_its_manifest(fixture_corpus, tmp_path):
    from wmkit.train.hidden import train

    folder, _ = fixture_corpus
    small = dict(size=32, batch=4, count=16, channels=8, whitening_crops=((64, 60),), log_every=1)
    provenance = train(out=tmp_path / "h", minutes=None, steps=2, corpus=str(folder), procedural_share=0.25, **small)
    import hashlib

    assert provenance["data"]["index_sha256"] == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert provenance["data"]["procedural_share"] == 0.25
