"""Benchmark the shipped wmkit-tiny pipeline (weights/tiny-ldm) on photos it never trained on.

    python benchmarks/tiny_ldm.py [--pipeline tiny] [--n-vae 32] [--n-gen 8] [--threads 1] [--grid docs/tiny_ldm_samples.png]

1. VAE round trip at 256x256 on crops of the *evaluation* photos of wmkit.data
   (the VAE trained on the calibration group only): PSNR and SSIM (skimage,
   RGB, 7x7 window), mean and per source photo.
2. Generation at 256x256, 25 DDIM steps: seconds per image (wall and process
   CPU time, at --threads torch threads) and a grid of samples.
3. DDIM inversion of the generated images (empty prompt, guidance 1): mean
   cosine similarity between the true initial noise and the inverted latents at
   10, 25 and 50 steps, on the clean PNG-exact images and after a JPEG-75 round
   trip; "other" is the cosine against another image's noise (the null level).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wmkit import data  # noqa: E402
from wmkit.diffusion import decode_latents, encode_images, generate, initial_latents, invert, load_pipeline  # noqa: E402
from wmkit.train.tiny_ldm import photo_label  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((a - b) ** 2)))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0))


def jpeg(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    from PIL import Image

    out = []
    for x in images:
        buf = io.BytesIO()
        Image.fromarray(x.mul(255).round().byte().permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))


def save_grid(images: torch.Tensor, titles: list[str], path: Path, cols: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, image, title in zip(np.atleast_1d(axes).ravel(), images, titles):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=7)
    fig.suptitle("wmkit-tiny samples (256x256, 25 DDIM steps)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="tiny")
    parser.add_argument("--n-vae", type=int, default=32)
    parser.add_argument("--n-gen", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale of generation")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50], help="inversion steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", default="docs/tiny_ldm_samples.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.pipeline)
    results = {"pipeline": args.pipeline, "threads": args.threads}

    # 1. VAE round trip on evaluation photos (never trained on)
    names = [name for _, name in data.PHOTOS["evaluation"]]
    photos = data.crops(args.n_vae, size=256, group="evaluation", seed=11)
    x = torch.stack(photos)
    t0 = time.perf_counter()
    y = decode_latents(pipe, encode_images(pipe, x))
    vae_s = (time.perf_counter() - t0) / len(x)
    p = [psnr(a, b) for a, b in zip(y, x)]
    s = [ssim(a, b) for a, b in zip(y, x)]
    per_photo = {}
    for i, name in enumerate(names):
        idx = list(range(i, len(x), len(names)))
        if idx:
            per_photo[Path(name).stem] = (round(float(np.mean([p[j] for j in idx])), 2), round(float(np.mean([s[j] for j in idx])), 3))
    results["vae"] = {"images": len(x), "psnr_db": round(float(np.mean(p)), 2), "ssim": round(float(np.mean(s)), 3),
                      "seconds_per_round_trip": round(vae_s, 3), "per_photo_psnr_ssim": per_photo}
    print(f"VAE round trip, {len(x)} evaluation crops 256x256: PSNR {np.mean(p):.2f} dB, SSIM {np.mean(s):.3f} "
          f"({vae_s:.2f} s per image)", flush=True)
    for name, (pp, ss) in per_photo.items():
        print(f"  {name:22s} PSNR {pp:6.2f}  SSIM {ss:.3f}")

    # 2. generation at 256x256, 25 steps
    labels = ["chelsea", "coffee", "rocket", "camera", "moon", "brick", "grass", "coins", "retina", "page", "astronaut", "flower"]
    prompts = [photo_label(labels[i % len(labels)]) for i in range(args.n_gen)]
    gen = torch.Generator().manual_seed(args.seed)
    zT = initial_latents(pipe, len(prompts), height=256, width=256, generator=gen)
    t0, c0 = time.perf_counter(), time.process_time()
    images = generate(pipe, prompts, latents=zT, num_steps=25, guidance_scale=args.guidance)
    wall, cpu = (time.perf_counter() - t0) / len(prompts), (time.process_time() - c0) / len(prompts)
    results["generation"] = {"images": len(prompts), "steps": 25, "guidance_scale": args.guidance,
                             "wall_seconds_per_image": round(wall, 2), "cpu_seconds_per_image": round(cpu, 2),
                             "pixel_std": round(float(images.std()), 3)}
    print(f"generation 256x256, 25 steps, guidance {args.guidance}: {wall:.2f} s wall / {cpu:.2f} s CPU per image "
          f"({args.threads} thread(s))", flush=True)
    save_grid(images, prompts, Path(args.grid))
    print(f"samples -> {args.grid}")

    # 3. inversion of the generated images: cosine(true z_T, inverted), clean and JPEG-75
    attacked = jpeg(images, 75)
    other = zT.roll(1, dims=0)
    table = {}
    for steps in args.steps:
        row = {}
        for label, imgs in (("clean", images), ("jpeg75", attacked)):
            t0 = time.perf_counter()
            z = invert(pipe, imgs, num_steps=steps)
            row[label] = round(float(cosine(z, zT).mean()), 3)
            row[label + "_other"] = round(float(cosine(z, other).mean()), 3)
            row[label + "_seconds_per_image"] = round((time.perf_counter() - t0) / len(imgs), 2)
        table[steps] = row
        print(f"inversion {steps:3d} steps: cos clean {row['clean']:.3f} (other {row['clean_other']:+.3f}), "
              f"jpeg-75 {row['jpeg75']:.3f} (other {row['jpeg75_other']:+.3f}); {row['clean_seconds_per_image']:.2f} s/image", flush=True)
    results["inversion"] = table
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
