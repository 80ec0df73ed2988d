"""Do the learned extractor's pre-screens change any reading, and what do they save?

    python benchmarks/hidden_prescreen.py [--method hidden] [--photos 8] [--size 512] [--threads 2]

`HiddenExtractor` (`hidden`, `stable_signature`) also reads an image rescaled to each of its
likeliest tile periods; `_may_win` first judges each rescaling on central windows
(`HiddenExtractor.PRESCREEN`) and skips the full reading where it cannot win. This marks
`--photos` evaluation photos (crop seed 5) with `--method` (Stable Signature: the demo key,
whose decoder ships), attacks them and their clean originals ten ways, reads every image with
no pre-screen (the full search), with the first window only and with the shipped windows, and
prints the seconds per reading and how many readings each setting leaves identical to the full
search (and the bit accuracy of any that differ, both ways).
"""
import argparse
import time

import torch

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.memory import reuse_freed_memory
from wmkit.models.hidden import HiddenExtractor

ATTACKS = ["none", "jpeg:80", "resize:0.5", "resize:0.75", "center_crop:0.5", "center_crop:0.25",
           "center_crop:0.5,resize_back=false", "rotate:10", "gaussian_blur:1", "brightness:1.5"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hidden", choices=["hidden", "stable_signature"])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reuse_freed_memory()  # as the command line does
    torch.set_num_threads(args.threads)
    from wmkit.demo import DEMO_KEY_SEED

    wm = wmkit.create(args.method)
    key = wmkit.generate_key(args.method, seed=DEMO_KEY_SEED if args.method == "stable_signature" else 0)
    bits = torch.as_tensor(wm.message(key)).float()
    photos = data.crops(args.photos, size=args.size, group="evaluation", seed=5)
    marked = wm.embed(photos, key)
    images = []
    for spec in ATTACKS:
        for kind, group in (("marked", marked), ("clean", photos)):
            generator = torch.Generator().manual_seed(0)
            images += [(spec, kind, im if spec == "none" else parse_attack(spec)(im[None], generator=generator)[0]) for im in group]
    shipped = HiddenExtractor.PRESCREEN
    settings = {"full search": (), "first window": shipped[:1], "shipped windows": shipped}
    readings = {}
    try:
        for name, screens in settings.items():
            HiddenExtractor.PRESCREEN = screens
            start = time.perf_counter()
            with torch.no_grad():
                readings[name] = [wm.extractor(im[None])[0] for _, _, im in images]
            print(f"{name} {screens}: {(time.perf_counter() - start) / len(images):.3f} s per reading", flush=True)
    finally:
        HiddenExtractor.PRESCREEN = shipped

    def accuracy(logits: torch.Tensor) -> float:
        return round(float(((logits > 0).float() == bits).float().mean()), 3)

    for name in list(settings)[1:]:
        differ = [(spec, kind, accuracy(a), accuracy(b)) for (spec, kind, _), a, b
                  in zip(images, readings["full search"], readings[name]) if not torch.equal(a, b)]
        print(f"{name}: {len(images) - len(differ)} of {len(images)} readings identical to the full search"
              + (f"; differ (attack, marked or clean, bit accuracy full / {name}): {differ}" if differ else ""))


if __name__ == "__main__":
    main()
