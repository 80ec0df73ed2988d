"""Train the shipped SSL backbone (weights/ssl-backbone/): SimCLR on offline photos.

    python -m wmkit.train.ssl_backbone --minutes 12 [--out weights/ssl-backbone] [--images-dir DIR]

Self-supervised objective: NT-Xent (SimCLR, temperature 0.2) between two views
of each image, the views drawn with wmkit's own attacks (random crop, resize,
differentiable JPEG, blur, noise, brightness/contrast/saturation, rotation), the
very transformations the marks must survive. A small projector MLP is used for
the loss and thrown away. Then PCA whitening is fitted on features of other
crops and saved with the backbone (safetensors, fp16).

Data: crops of the *calibration* photo group (wmkit.data), or any folder of
images with --images-dir. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .. import data
from ..attacks import parse_attack
from ..models.backbone import TinyBackbone, WhitenedBackbone, save_whitened

VIEW_ATTACKS = ["random_crop@{s}", "gaussian_blur@{s}", "jpeg_diff@{s}", "gaussian_noise@{s}", "brightness@{s}",
                "contrast@{s}", "saturation@{s}", "rotate@{s}", "resize@{s}"]


def _view(batch: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Two or three random attacks at random strengths, then back to a fixed size."""
    out = batch
    count = int(torch.randint(2, 4, (1,), generator=generator))
    for index in torch.randperm(len(VIEW_ATTACKS), generator=generator)[:count].tolist():
        strength = float(torch.rand(1, generator=generator)) * 0.8 + 0.1
        out = parse_attack(VIEW_ATTACKS[index].format(s=round(strength, 3)))(out, generator=generator)
    if torch.rand(1, generator=generator) < 0.5:
        out = out.flip(-1)
    return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, targets)


def load_training_images(count: int, size: int, seed: int, images_dir: Optional[str]) -> torch.Tensor:
    if images_dir:
        from ..imageio import iter_image_paths, load_image

        photos = [load_image(p) for p in iter_image_paths([images_dir])]
        return torch.stack(data.crops(count, size=size, seed=seed, photos=photos))
    return torch.stack(data.crops(count, size=size, group="calibration", seed=seed))


def train(*, out: Path, minutes: Optional[float], steps: Optional[int], width: int = 24, dim: int = 128,
          batch: int = 32, size: int = 96, count: int = 600, seed: int = 0, images_dir: Optional[str] = None) -> dict:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = load_training_images(count, 128, seed, images_dir)
    model = TinyBackbone(width=width, out_dim=dim)
    projector = torch.nn.Sequential(torch.nn.Linear(dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    params = list(model.parameters()) + list(projector.parameters())
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    start, step, losses = time.perf_counter(), 0, []
    budget = minutes * 60 if minutes is not None else float("inf")
    total = steps if steps is not None else 10**9
    model.train()
    while step < total and time.perf_counter() - start < budget:
        index = torch.randint(len(images), (batch,), generator=generator)
        x = images[index]
        with torch.no_grad():
            v1, v2 = _view(x, generator, size), _view(x, generator, size)
        loss = nt_xent(projector(model(v1)), projector(model(v2)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step}  loss {sum(losses[-50:]) / 50:.3f}  {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    whitened = WhitenedBackbone(model, dim)
    fit_images = load_training_images(400, 128, seed + 1, images_dir)
    with torch.no_grad():
        features = torch.cat([model(fit_images[i:i + 50]) for i in range(0, len(fit_images), 50)])
    whitened.fit_whitening(features)
    whitened.half().float()  # the shipped file is fp16: fit the provenance to what ships
    provenance = {"steps": step, "seconds": round(time.perf_counter() - start), "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
                  "batch": batch, "view_size": size, "train_images": count, "data": images_dir or "wmkit.data calibration group",
                  "recipe": "python -m wmkit.train.ssl_backbone"}
    save_whitened(whitened.half(), out, provenance=provenance)
    return provenance


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--images-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ..calibration import weights_dir

    out = Path(args.out) if args.out else weights_dir() / "ssl-backbone"
    print(json.dumps(train(out=out, minutes=args.minutes, steps=args.steps, width=args.width, images_dir=args.images_dir)))


if __name__ == "__main__":
    main()
