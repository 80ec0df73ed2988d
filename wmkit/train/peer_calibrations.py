"""Fit the shipped null calibrations of the bit-based peers (weights/calibration/).

    python -m wmkit.train.peer_calibrations [--methods dwtdct dwtdctsvd rivagan] [--overwrite]

Data: crops of the offline photos in the *calibration* group of wmkit.data
(never the evaluation group, on which the calibrations are tested), at 256 and
512 pixels, each clean and through the `calibration` attack suite.
"""
from __future__ import annotations

import argparse
import time

from .. import data
from ..calibrate import calibrate_images
from ..calibration import shipped_calibration_path
from ..registry import create

SIZES = {256: 120, 512: 60}  # crops per size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dwtdct", "dwtdctsvd", "rivagan"])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    images = []
    for size, count in SIZES.items():
        images += data.crops(count, size=size, group="calibration", seed=size)
    for method in args.methods:
        wm = create(method, calibration=None)
        start = time.perf_counter()
        model = calibrate_images(
            wm, images, attacks="calibration", progress=True,
            info={"source": f"wmkit.data calibration group, crops {SIZES}", "recipe": "python -m wmkit.train.peer_calibrations"},
        )
        path = model.save(shipped_calibration_path(method, wm.config()), overwrite=args.overwrite)
        dep = model.info["dependence"]
        print(f"{method}: {model.info['num_images']} decodes in {time.perf_counter() - start:.0f} s -> {path} "
              f"(bit-one rate {model.info['bit_one_rate']:.3f}, agreement {dep['mean_pairwise_agreement']:.3f}, "
              f"variance ratio {dep['variance_ratio']:.2f})")


if __name__ == "__main__":
    main()
