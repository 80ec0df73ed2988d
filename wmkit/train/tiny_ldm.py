"""Train wmkit-tiny, the small offline latent diffusion pipeline in weights/tiny-ldm/.

    python -m wmkit.train.tiny_ldm vae  [--minutes 28] [--out weights/tiny-ldm]
    python -m wmkit.train.tiny_ldm text [--out weights/tiny-ldm]
    python -m wmkit.train.tiny_ldm unet [--minutes 25] [--out weights/tiny-ldm]
    python -m wmkit.train.tiny_ldm finish [--out weights/tiny-ldm]   # scheduler, model_index.json, sha256s

Each stage writes its component folder in diffusers layout, so the result loads
with ``StableDiffusionPipeline.from_pretrained(out)``. ``--small`` shrinks every
model and ``--steps`` caps the steps (the tests train a few steps of each stage
into a temporary folder).

Data: crops of the photographs in the *calibration* group of ``wmkit.data``
(never the evaluation group, on which the benchmark measures the result), or
``--images DIR`` for any image folder (prompt "a photo of <file stem>"), or ``--corpus DIR``
(the train split of `python -m wmkit.data corpus build`; prompts from the source names, which
``text --corpus DIR`` adds to the vocabulary).
Prompts come from the source photo: ``photo_label`` ("a photo of a cat" for
chelsea, ...).

- vae: ``AutoencoderKL`` with SD's latent shape (factor 8, 4 channels); L1 +
  SSIM loss on random crops with flips, rotations and colour changes, decoding the
  posterior mean, KL weight 1e-6; afterwards ``scaling_factor = 1 / std(latents)`` on training crops.
- text: a byte-level BPE ``CLIPTokenizer`` with a small vocabulary (256 byte
  characters with and without ``</w>``, the prompt words and their merges) and a
  tiny ``CLIPTextModel`` that is left random but fixed (seeded): it still maps
  each prompt to its own conditioning, which the UNet learns to use.
- unet: ``UNet2DConditionModel`` trained with the epsilon objective on the
  scaled latents of 256-pixel crops (precomputed once with the frozen VAE, with
  flips), SD's DDPM betas (scaled_linear, 0.00085-0.012, 1000 steps), 10%
  empty prompts for classifier-free guidance.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import data
from . import autocast, training_device

# ----------------------------------------------------------------------------- prompts

PHOTO_LABELS = {
    "coffee": "coffee", "chelsea": "a cat", "rocket": "a rocket", "retina": "a retina",
    "camera": "a cameraman", "moon": "the moon", "brick": "a brick wall", "grass": "grass",
    "coins": "coins", "page": "a page of text",
    "astronaut": "an astronaut", "motorcycle_left": "a motorcycle", "motorcycle_right": "a motorcycle",
    "hubble_deep_field": "galaxies in space", "ihc": "stained cells", "gravel": "gravel",
    "clock_motion": "a clock", "text": "text", "china": "a temple", "flower": "a flower",
}
EXTRA_WORDS = "a an the of photo picture image on in with and red green blue white black dark bright small big".split()


def photo_label(name: str) -> str:
    """The prompt for a source photo file name: 'chelsea.png' -> 'a photo of a cat'."""
    stem = Path(name).stem
    return f"a photo of {PHOTO_LABELS.get(stem, stem.replace('_', ' '))}"


def corpus_labels(corpus: str | Path) -> list[str]:
    """The prompt of each image of a corpus's train split, in ``corpus_paths`` order: its source's
    name as words ("plasma-workspace-wallpapers:ColdRipple" -> "a photo of cold ripple")."""
    import re

    from ..data.corpus import load_manifest

    labels = []
    for entry in load_manifest(corpus):
        if entry.split == "train":
            name = entry.source.split(":", 1)[-1].rsplit("_by_", 1)[0]
            words = re.sub(r"([a-z])([A-Z])", r"\1 \2", Path(name).stem).replace("_", " ").replace("-", " ")
            labels.append(photo_label(words.lower()))
    return labels


def prompt_words(corpus: Optional[str | Path] = None) -> list[str]:
    words = set(EXTRA_WORDS)
    for label in PHOTO_LABELS.values():
        words.update(photo_label(label).lower().split())
    for label in corpus_labels(corpus) if corpus is not None else []:
        words.update(label.split())
    return sorted(words)


# ----------------------------------------------------------------------------- model configs

def vae_config(small: bool = False) -> dict:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16) if small else (32, 64, 128, 128),
        layers_per_block=1, norm_num_groups=8 if small else 16, sample_size=256, scaling_factor=1.0,
    )


def text_config(vocab_size: int, small: bool = False) -> dict:
    return dict(
        vocab_size=vocab_size, hidden_size=32 if small else 64, intermediate_size=64 if small else 256,
        num_hidden_layers=1 if small else 2, num_attention_heads=2 if small else 4,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32 if small else 64,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )


def unet_config(cross_attention_dim: int, small: bool = False) -> dict:
    return dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32) if small else (64, 96, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D") if small
        else ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D") if small
        else ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8 if small else 32,
    )


SCHEDULER_CONFIG = dict(
    _class_name="DDIMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon", trained_betas=None,
)


# ----------------------------------------------------------------------------- data

def training_images(count: int, size: int, seed: int, images_dir: Optional[str] = None,
                    corpus: Optional[str] = None) -> tuple[torch.Tensor, list[str]]:
    """``count`` uint8 crops (N, 3, size, size) and their prompts."""
    if corpus is not None:  # crop i comes from photo i % len(photos), as with data.crops
        from ..data.sampler import load_sources, training_crops

        labels = corpus_labels(corpus)
        crops = training_crops(count, size, seed=seed, sources=load_sources(corpus), flip=False)
        return crops.mul(255).round().to(torch.uint8), [labels[i % len(labels)] for i in range(count)]
    if images_dir:
        from ..imageio import load_image

        paths = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"})
        photos = [load_image(p) for p in paths]
        names = [p.name for p in paths]
    else:
        photos = data.load_photos("calibration")
        names = [name for _, name in data.PHOTOS["calibration"]]
    crops = data.crops(count, size=size, seed=seed, photos=photos)
    prompts = [photo_label(names[i % len(names)]) for i in range(count)]
    return torch.stack([c.mul(255).round().to(torch.uint8) for c in crops]), prompts


def augment(batch: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 pool crops -> float [0,1] random sub-crops with flips, rotations and colour changes."""
    out = []
    for image in batch:
        _, h, w = image.shape
        top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
        x = image[:, top:top + crop, left:left + crop].float() / 255
        if torch.rand(1, generator=gen) < 0.5:
            x = x.flip(-1)
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2))
        x = x[torch.randperm(3, generator=gen)]
        if torch.rand(1, generator=gen) < 0.5:  # tint (half the calibration photos are grey)
            gain = 0.7 + 0.6 * torch.rand(3, 1, 1, generator=gen)
            x = (x * gain).clamp(0, 1)
        out.append(x)
    return torch.stack(out)


def _lr(base: float, progress: float, warmup: float = 0.03) -> float:
    if progress < warmup:
        return base * max(progress / warmup, 0.05)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


class _Clock:
    """Progress in [0, 1] by steps or by wall time, whichever runs out first."""

    def __init__(self, steps: Optional[int], minutes: Optional[float]):
        self.steps, self.seconds, self.start = steps, (minutes * 60 if minutes else None), time.perf_counter()

    def progress(self, step: int) -> float:
        parts = []
        if self.steps:
            parts.append(step / self.steps)
        if self.seconds:
            parts.append((time.perf_counter() - self.start) / self.seconds)
        return max(parts) if parts else 1.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------------- VAE

def train_vae(out: Path, *, minutes: Optional[float], steps: Optional[int], small: bool, crop: int = 64,
              batch: int = 8, lr: float = 8e-4, pool: int = 800, seed: int = 0, images_dir: Optional[str] = None,
              log_every: int = 50, resume: bool = False, decoder_only: bool = False, device: str = "cpu",
              corpus: Optional[str] = None) -> dict:
    """Train the VAE; ``resume`` continues from ``out/vae``; ``decoder_only`` (with resume) trains only
    the decoder, so the latent space, the scaling factor and a UNet trained on it stay valid."""
    from diffusers import AutoencoderKL
    import kornia

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pool_256, _ = training_images(pool, 256, seed + 1, images_dir, corpus)
    pool_crop, _ = training_images(pool // 2, 2 * crop, seed + 2, images_dir, corpus)  # more zoomed-out views
    if resume or decoder_only:
        vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32)
    else:
        vae = AutoencoderKL(**vae_config(small))
    dev = training_device(device)
    vae.to(dev)
    params = list(vae.parameters())
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    clock, step, hist = _Clock(steps, minutes), 0, []
    while clock.progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = _lr(lr, clock.progress(step))
        idx = torch.randint(0, pool_256.shape[0], (batch,), generator=gen)
        x = augment(pool_256[idx], crop, gen)
        if step % 3 == 2:
            x[: batch // 2] = augment(pool_crop[torch.randint(0, pool_crop.shape[0], (batch // 2,), generator=gen)], crop, gen)
        x = x.to(dev)
        with torch.set_grad_enabled(not decoder_only), autocast(dev):
            post = vae.encode(x * 2 - 1).latent_dist
        # decode the posterior mean: with a KL weight of 1e-6 the model is a plain autoencoder in effect, and
        # sampling (std ~1 at initialisation) would hide the signal for thousands of steps
        with autocast(dev):
            y = (vae.decode(post.mean).sample.float() + 1) / 2
        l1 = (y - x).abs().mean()
        ssim = kornia.losses.ssim_loss(y.clamp(0, 1), x, window_size=7)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + 0.5 * ssim + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            hist.append(10 * torch.log10(1 / F.mse_loss(y.clamp(0, 1), x)).item())
        if step % log_every == 0:
            print(f"vae step {step} {clock.elapsed():.0f}s lr {opt.param_groups[0]['lr']:.2e} "
                  f"l1 {l1.item():.4f} ssim-loss {ssim.item():.3f} psnr(last {log_every}) {np.mean(hist[-log_every:]):.2f}", flush=True)
        if step % 400 == 0 and not decoder_only:
            _save_vae(vae, out, None)
    vae.eval()
    if decoder_only:  # the latent space (and the scaling factor) must not move
        _save_vae(vae, out, None)
        info = {"steps": step, "seconds": round(clock.elapsed()), "decoder_only": True,
                "train_psnr_last100": float(np.mean(hist[-100:])) if hist else None}
        print("vae decoder done", info, flush=True)
        return info
    with torch.no_grad():
        lat = torch.cat([vae.encode((pool_256[i:i + 8].float() / 255 * 2 - 1).to(dev)).latent_dist.mean.cpu()
                         for i in range(0, min(pool, 64), 8)])
    scale = float(1.0 / lat.std())
    _save_vae(vae, out, scale)
    info = {"steps": step, "seconds": round(clock.elapsed()), "scaling_factor": scale,
            "train_psnr_last100": float(np.mean(hist[-100:])) if hist else None}
    print("vae done", info, flush=True)
    return info


def _save_vae(vae, out: Path, scale: Optional[float]) -> None:
    import copy

    if scale is not None:
        vae.register_to_config(scaling_factor=scale)
    copy.deepcopy(vae).cpu().save_pretrained(out / "vae")
    # the stored copy is fp16 (half the size); training continues in fp32
    from safetensors.torch import load_file, save_file

    path = out / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(path).items()}, path)


# ----------------------------------------------------------------------------- text

def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer(out: Path, words: Optional[Sequence[str]] = None):
    """A byte-level BPE CLIPTokenizer with a small vocabulary: the 256 byte
    characters (with and without </w>), the given whole words (with the merges
    that build them left to right) and the start/end tokens."""
    from transformers import CLIPTokenizer

    words = sorted(set(w.lower() for w in (words or prompt_words())))
    out.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = list(_bytes_to_unicode().values())
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[str] = []
    seen = set()
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:  # merge left to right: ((w o) r) d</w>
            pair = (symbols[0], symbols[1])
            if pair not in seen:
                seen.add(pair)
                merges.append(" ".join(pair))
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            vocab.setdefault(symbols[0], len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77,
                        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                        unk_token="<|endoftext|>")
    tok.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)


def build_text(out: Path, *, small: bool = False, seed: int = 0, corpus: Optional[str] = None) -> dict:
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = build_tokenizer(out / "tokenizer", prompt_words(corpus) if corpus is not None else None)
    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**text_config(len(tok), small))).eval()
    model.save_pretrained(out / "text_encoder", safe_serialization=True)  # fp32: tiny, and loads in any dtype setting
    ids = tok(["a photo of a cat"]).input_ids[0]
    info = {"vocab_size": len(tok), "example_ids": ids}
    print("text done", info, flush=True)
    return info


# ----------------------------------------------------------------------------- UNet

def _load_components(out: Path):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32).eval()
    return vae, tok, text


@torch.no_grad()
def encode_prompts(tok, text, prompts: Sequence[str]) -> torch.Tensor:
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text(ids)[0]


def train_unet(out: Path, *, minutes: Optional[float], steps: Optional[int], small: bool, count: int = 400,
               batch: int = 16, lr: float = 4e-4, seed: int = 0, images_dir: Optional[str] = None,
               size: int = 256, log_every: int = 100, device: str = "cpu", resume: bool = False,
               corpus: Optional[str] = None) -> dict:
    """Train the UNet on the frozen VAE's latents; ``resume`` continues from ``out/unet``
    (the shipped EMA weights, which also start the new EMA)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = training_device(device)
    vae, tok, text = _load_components(out)
    vae.to(dev)
    images, prompts = training_images(count, size, seed + 3, images_dir, corpus)
    t0 = time.perf_counter()
    with torch.no_grad():  # latents of each crop and its mirror image, precomputed once
        lat = []
        for i in range(0, count, 8):
            x = (images[i:i + 8].float() / 255 * 2 - 1).to(dev)
            lat.append(vae.encode(torch.cat([x, x.flip(-1)])).latent_dist.mean * vae.config.scaling_factor)
        latents = torch.cat([torch.cat([l[: len(l) // 2] for l in lat]), torch.cat([l[len(l) // 2:] for l in lat])])
    prompts = prompts + prompts
    uniq = sorted(set(prompts)) + [""]
    cond = encode_prompts(tok, text, uniq).to(dev)
    pidx = torch.tensor([uniq.index(p) for p in prompts])
    print(f"unet: {len(latents)} latents {tuple(latents.shape[1:])} (std {latents.std():.3f}) in {time.perf_counter() - t0:.0f}s, "
          f"{len(uniq) - 1} prompts", flush=True)
    if resume:
        unet = UNet2DConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32).to(dev)
    else:
        unet = UNet2DConditionModel(**unet_config(text.config.hidden_size, small)).to(dev)
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k in
                             ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")})
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in unet.parameters()]
    clock, step, hist = _Clock(steps, minutes), 0, []
    while clock.progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = _lr(lr, clock.progress(step))
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        z0 = latents[idx.to(dev)]
        c = pidx[idx].clone()
        c[torch.rand(batch, generator=gen) < 0.1] = len(uniq) - 1  # 10% empty prompt
        # drawn on the CPU generator (the same stream on any device), then moved
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        t = torch.randint(0, 1000, (batch,), generator=gen).to(dev)
        with autocast(dev):
            pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=cond[c.to(dev)]).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, unet.parameters()):
                e.lerp_(p.detach(), 1 - decay)
        hist.append(loss.item())
        if step % log_every == 0:
            print(f"unet step {step} {clock.elapsed():.0f}s lr {opt.param_groups[0]['lr']:.2e} loss {np.mean(hist[-log_every:]):.4f}", flush=True)
        if step % 1000 == 0:
            _save_unet(unet, ema, out)
    _save_unet(unet, ema, out)
    info = {"steps": step, "seconds": round(clock.elapsed()), "loss_last100": float(np.mean(hist[-100:])) if hist else None,
            "latents": len(latents), "prompts": uniq[:-1]}
    print("unet done", info, flush=True)
    return info


def _save_unet(unet, ema, out: Path) -> None:
    import copy

    shipped = copy.deepcopy(unet)
    with torch.no_grad():
        for p, e in zip(shipped.parameters(), ema):
            p.copy_(e)
    shipped.cpu().half().save_pretrained(out / "unet")


# ----------------------------------------------------------------------------- pipeline files

def finish(out: Path) -> dict:
    """Scheduler config, model_index.json and the sha256 of every file."""
    import diffusers

    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER_CONFIG, "_diffusers_version": diffusers.__version__}, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    sums = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "sha256sums.txt"):
        sums[path.relative_to(out).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "sha256sums.txt").write_text("".join(f"{h}  {name}\n" for name, h in sums.items()))
    total = sum((out / name).stat().st_size for name in sums)
    print(f"finish: {len(sums)} files, {total / 1e6:.2f} MB", flush=True)
    return {"files": sums, "bytes": total}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["vae", "text", "unet", "finish", "all"])
    parser.add_argument("--out", default=None, help="output folder (default: weights/tiny-ldm)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time budget of a training stage")
    parser.add_argument("--steps", type=int, default=None, help="step cap of a training stage")
    parser.add_argument("--small", action="store_true", help="reduced model sizes (tests)")
    parser.add_argument("--images", default=None, help="train on this image folder instead of the calibration photos")
    parser.add_argument("--corpus", default=None,
                        help="train on a corpus's train split (python -m wmkit.data corpus build); prompts from its source names")
    parser.add_argument("--pool", type=int, default=None, help="number of training crops")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="vae, unet: continue from OUT/vae or OUT/unet")
    parser.add_argument("--decoder-only", action="store_true", help="vae: fine-tune only the decoder of OUT/vae")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None, help="vae: side of the training patches (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the weights are saved from a CPU copy)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out is None:
        from ..paths import weights_dir

        out = weights_dir() / "tiny-ldm"
    else:
        out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.minutes and not args.steps:
        args.minutes = {"vae": 28, "unet": 25}.get(args.stage, 25)
    if args.stage in ("vae", "all"):
        train_vae(out, minutes=args.minutes, steps=args.steps, small=args.small, images_dir=args.images,
                  resume=args.resume, decoder_only=args.decoder_only, device=args.device, corpus=args.corpus,
                  **({"crop": args.crop} if args.crop else {}),
                  **({"pool": args.pool} if args.pool else {}), **({"lr": args.lr} if args.lr else {}),
                  **({"batch": args.batch} if args.batch else {}))
    if args.stage in ("text", "all"):
        build_text(out, small=args.small, corpus=args.corpus)
    if args.stage in ("unet", "all"):
        train_unet(out, minutes=args.minutes, steps=args.steps, small=args.small, images_dir=args.images, device=args.device,
                   resume=args.resume, corpus=args.corpus,
                   **({"count": args.pool} if args.pool else {}), **({"lr": args.lr} if args.lr else {}),
                   **({"batch": args.batch} if args.batch else {}))
    if args.stage in ("finish", "all"):
        finish(out)


if __name__ == "__main__":
    main()
