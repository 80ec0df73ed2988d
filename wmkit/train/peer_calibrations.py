"""Fit the shipped null calibrations of the bit-based schemes (weights/calibration/).

    python -m wmkit.train.peer_calibrations [--methods dwtdct dwtdctsvd rivagan periodic hidden stable_signature ssl_multi_bit]
                                            [--corpus DIR] [--overwrite]

Data: with ``--corpus DIR`` (how the shipped calibrations are made) crops of the training
corpus's train split, photographs and artwork from many sources; without it, crops of the ten
offline photos in the *calibration* group of wmkit.data, which is quick but narrow: a null
fitted on ten photos does not hold on photos unlike them (docs/statistics.md, the
leave-one-group-out check). Crops at 256 and 512 pixels, each clean and through the
`calibration` attack suite. The evaluation group is never
used: the tests and benchmarks check the calibrations on it. For ``stable_signature`` the
crops are also read after a round trip through the pipeline's original VAE decoder, which
is what an unmarked generation looks like. Extractor-based calibrations record the
extractor's weights digest, and are refused if the shipped extractor changes.
"""
from __future__ import annotations

import argparse
import time

from .. import data
from ..calibration.measure import calibrate_images
from ..calibration import shipped_calibration_path
from ..registry import create

SIZES = {256: 120, 512: 60}  # crops per size
METHODS = ["dwtdct", "dwtdctsvd", "rivagan", "periodic", "hidden", "stable_signature", "ssl_multi_bit"]


def calibration_images(corpus=None) -> list:
    if corpus is None:
        images = []
        for size, count in SIZES.items():
            images += data.crops(count, size=size, group="calibration", seed=size)
        return images
    from ..data.sampler import load_sources, training_crops

    sources = load_sources(corpus)
    return [crop for size, count in SIZES.items()
            for crop in training_crops(count, size, seed=size, sources=sources, min_scale=0.35, flip=False)]


def fit(method: str, images: list, *, source: str, overwrite: bool):
    wm = create(method, calibration=None)
    info = {"source": source, "recipe": "python -m wmkit.train.peer_calibrations"}
    digest = wm.extractor_digest()
    if digest is not None:
        info["extractor_digest"] = digest
    if method == "stable_signature":
        from ..attacks.regeneration import VAERegeneration

        regenerate = VAERegeneration(rounds=1, pipeline=wm.pipe)
        images = images + [regenerate(image[None])[0] for image in images]
        info["source"] += " + each through the pipeline's original VAE decoder"
    start = time.perf_counter()
    model = calibrate_images(wm, images, attacks="calibration", progress=True, info=info)
    path = model.save(shipped_calibration_path(method, wm.config()), overwrite=overwrite)
    dep = model.info["dependence"]
    print(f"{method}: {model.info['num_images']} decodes in {time.perf_counter() - start:.0f} s -> {path} "
          f"(bit-one rate {model.info['bit_one_rate']:.3f}, agreement {dep['mean_pairwise_agreement']:.3f}, "
          f"variance ratio {dep['variance_ratio']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--corpus", default=None, help="fit on a corpus's train split (python -m wmkit.data corpus build)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    images = calibration_images(args.corpus)
    if args.corpus:
        from ..data.sampler import data_provenance

        source = f"corpus train split, crops {SIZES}: {data_provenance(args.corpus)}"
    else:
        source = f"wmkit.data calibration group, crops {SIZES}"
    for method in args.methods:
        fit(method, images, source=source, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
