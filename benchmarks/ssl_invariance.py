"""How much of an SSL mark survives a transform, backbone by backbone: the diagnosis behind
the SSL marks' robustness (docs/ssl.md, "Why marks did not survive geometry").

    python benchmarks/ssl_invariance.py [--photos 6] [--psnr 40] [--backbone tiny FOLDER ...]

Each evaluation photo (512 px) is marked by ``ssl_zero_bit``; for each transform T the script
prints the share of the mark's push along the key's direction u that T leaves:

    kept = u . (f(T marked) - f(T clean)) / u . (f(marked) - f(clean))

(1: the mark moves the feature as much after T as before; 0: T undid it), and the |cosine| with
u that the detector sees after T. ``random-plain`` and ``random-antialiased`` are untrained
backbones (whitened on crops of the calibration photos), to separate what the architecture does
from what training does.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import wmkit
from wmkit import data
from wmkit.attacks import parse_attack
from wmkit.keys import generate_key
from wmkit.models.backbone import TinyBackbone, WhitenedBackbone
from wmkit.watermarkers.ssl import to_working

TRANSFORMS = {
    "shift 3 px": lambda im: torch.roll(im, (3, 3), (1, 2)),
    "rotate:1": "rotate:1",
    "rotate:10": "rotate:10",
    "center_crop:0.5": "center_crop:0.5",
    "random_crop:0.5 as is": "random_crop:0.5,resize_back=false",
    "resize:0.5": "resize:0.5",
    "jpeg:50": "jpeg:50",
    "gaussian_blur:1": "gaussian_blur:1",
    "brightness:1.5": "brightness:1.5",
}


def backbone_for(spec: str):
    if not spec.startswith("random-"):
        return spec
    torch.manual_seed(0)
    model = TinyBackbone(antialias=spec == "random-antialiased").eval()
    whitening = torch.stack(data.crops(400, size=128, group="calibration", seed=7))
    with torch.no_grad():
        features = torch.cat([model(whitening[i:i + 50]) for i in range(0, len(whitening), 50)])
    whitened = WhitenedBackbone(model, model.config["out_dim"])
    whitened.fit_whitening(features)
    return whitened.eval()


def apply(transform, image):
    if callable(transform):
        return transform(image)
    return parse_attack(transform)(image[None], generator=torch.Generator().manual_seed(0))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--psnr", type=float, default=40.0)
    parser.add_argument("--backbone", nargs="+", default=["tiny", "random-plain", "random-antialiased"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = data.crops(args.photos, size=512, group="evaluation", seed=21, min_scale=0.6)
    for spec in args.backbone:
        wm = wmkit.create("ssl_zero_bit", backbone=backbone_for(spec), target_psnr=args.psnr, calibration=None)
        key = generate_key("ssl_zero_bit", seed=9)
        u = wm.direction(key)
        start = time.perf_counter()
        marked = wm.embed(photos, key)
        seconds = (time.perf_counter() - start) / len(photos)

        def feature(image):
            with torch.no_grad():
                return wm.backbone(to_working(image[None].float()))[0]

        def cosine(f):
            return abs(float(F.normalize(f, dim=0) @ u))

        print(f"\nbackbone {spec}: {wm.backbone.dim} whitened dimensions, {args.photos} photos at 512 px, "
              f"{args.psnr:g} dB, marking {seconds:.1f} s/img")
        pushes = [float((feature(m) - feature(c)) @ u) for m, c in zip(marked, photos)]
        print(f"  {'none':<24} |cos| median {np.median([cosine(feature(m)) for m in marked]):.2f}")
        for name, transform in TRANSFORMS.items():
            kept, cosines = [], []
            for m, c, before in zip(marked, photos, pushes):
                after_marked = feature(apply(transform, m))
                kept.append(float((after_marked - feature(apply(transform, c))) @ u) / before)
                cosines.append(cosine(after_marked))
            print(f"  {name:<24} kept median {np.median(kept):+.2f} (min {np.min(kept):+.2f}, max {np.max(kept):+.2f})"
                  f"   |cos| median {np.median(cosines):.2f}")


if __name__ == "__main__":
    main()
