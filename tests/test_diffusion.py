"""wmkit.diffusion: pipeline loading, VAE helpers, DDIM inversion, generation, and the tiny-ldm recipe.

Fast checks run on a tiny random pipeline built from configs (no files, no
network); one test loads the shipped weights/tiny-ldm and checks its VAE round
trip on an offline evaluation photo.
"""
import json
import math

import pytest
import torch

from wmkit.diffusion import (decode_latents, encode_images, generate, initial_latents, invert, invert_latents,
                             load_pipeline, random_pipeline, tiny_path)
from wmkit.errors import ConfigError, WeightsError


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_random_pipeline_is_seeded(pipe):
    other = random_pipeline(seed=0)
    for a, b in zip(pipe.unet.parameters(), other.unet.parameters()):
        assert torch.equal(a, b)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4


def test_encode_decode_shapes(pipe):
    z = encode_images(pipe, _images(3, 32))
    assert z.shape == (3, 4, 4, 4) and z.dtype == torch.float32
    assert torch.equal(z, encode_images(pipe, list(_images(3, 32))))  # list of (3,H,W) == batch
    assert torch.allclose(z, encode_images(pipe, _images(3, 32), batch_size=1), atol=1e-5)  # batching is exact
    x = decode_latents(pipe, z)
    assert x.shape == (3, 3, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_encode_rejects_bad_sizes(pipe):
    with pytest.raises(ConfigError):
        encode_images(pipe, torch.rand(1, 3, 30, 32))
    with pytest.raises(ConfigError):
        encode_images(pipe, [torch.rand(3, 32, 32), torch.rand(3, 40, 40)])


def test_scaling_factor_is_applied():
    a, b = random_pipeline(seed=1, scaling_factor=1.0), random_pipeline(seed=1, scaling_factor=2.0)
    x = _images(1, 32)
    assert torch.allclose(encode_images(b, x), 2 * encode_images(a, x), atol=1e-5)


def test_invert_batched_and_deterministic(pipe):
    x = _images(3, 32)
    z1 = invert(pipe, x, num_steps=3)
    assert z1.shape == (3, 4, 4, 4) and torch.isfinite(z1).all()
    z2 = invert(pipe, x, num_steps=3, batch_size=2)
    assert torch.allclose(z1, z2, atol=1e-4)
    z3 = invert(pipe, x, num_steps=3, prompt="a photo of a cat", guidance_scale=3.0)
    assert not torch.allclose(z1, z3)
    with pytest.raises(ConfigError):
        invert(pipe, x, num_steps=3, prompt=["a", "b"])


def test_inversion_reverses_ddim_sampling(pipe):
    """Run the pipeline's own DDIM sampler from z_T and invert its clean latents: with a smooth
    denoiser and many steps, inversion must come back close to z_T (checks timesteps/alphas match)."""
    from diffusers import DDIMScheduler

    zT = initial_latents(pipe, 2, height=32, width=32, generator=torch.Generator().manual_seed(3))
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(50)
    embeds, _ = pipe.encode_prompt([""] * 2, torch.device("cpu"), 1, False)
    z = zT.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            z = scheduler.step(pipe.unet(z, t, encoder_hidden_states=embeds).sample, t, z).prev_sample
    back = invert_latents(pipe, z, num_steps=50)
    cos = torch.nn.functional.cosine_similarity(back.flatten(1), zT.flatten(1)).mean()
    assert cos > 0.9


def test_generate_uses_given_latents(pipe):
    zT = initial_latents(pipe, 2, height=32, width=32, generator=torch.Generator().manual_seed(0))
    a = generate(pipe, ["a photo of a cat", "a photo of coffee"], latents=zT, num_steps=2)
    b = generate(pipe, ["a photo of a cat", "a photo of coffee"], latents=zT, num_steps=2, batch_size=1)
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-4)
    images, z = generate(pipe, "a photo", height=32, width=32, num_steps=2, generator=torch.Generator().manual_seed(0),
                         return_latents=True)
    assert torch.equal(z, zT[:1])  # same generator seed -> same initial latents


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(WeightsError, match="no diffusion pipeline"):
        load_pipeline(tmp_path / "missing")
    with pytest.raises(WeightsError, match="model_index.json"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(WeightsError):
        load_pipeline(tmp_path)


def test_tokenizer_offline(tmp_path):
    from transformers import CLIPTokenizer

    from wmkit.train.tiny_ldm import build_tokenizer, photo_label

    build_tokenizer(tmp_path)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    assert photo_label("chelsea.png") == "a photo of a cat"
    ids = tok("A photo of a cat").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "<|endoftext|>"]
    assert len(tok("zebra!").input_ids) > 3  # unknown words fall back to byte characters


def test_recipe_runs_at_reduced_size(tmp_path):
    """The CPU recipe, shrunk: a few steps of each stage, then the result loads as a pipeline."""
    from wmkit.train import tiny_ldm

    tiny_ldm.main(["vae", "--small", "--steps", "2", "--pool", "8", "--out", str(tmp_path)])
    tiny_ldm.main(["text", "--small", "--out", str(tmp_path)])
    tiny_ldm.main(["unet", "--small", "--steps", "2", "--pool", "8", "--out", str(tmp_path)])
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    first = {k: v + 0.25 for k, v in load_file(weights).items()}  # weights no fresh start would have
    save_file(first, weights)
    # --resume goes on from the saved UNet: one step at a negligible learning rate keeps it
    tiny_ldm.main(["unet", "--small", "--steps", "1", "--pool", "8", "--resume", "--lr", "1e-12", "--device", "cpu",
                   "--out", str(tmp_path)])
    again = load_file(weights)
    assert all(torch.allclose(again[k].float(), v.float(), atol=1e-3) for k, v in first.items())
    tiny_ldm.main(["finish", "--out", str(tmp_path)])
    assert (tmp_path / "sha256sums.txt").read_text().count("\n") >= 10
    pipe = load_pipeline(tmp_path)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.vae.config.scaling_factor != 1.0
    z = invert(pipe, _images(1, 64), num_steps=2)
    assert z.shape == (1, 4, 8, 8)


@pytest.mark.skipif(not (tiny_path() / "model_index.json").is_file(), reason="weights/tiny-ldm not present")
def test_shipped_tiny_vae_round_trip(eval_photos_256):
    """The shipped pipeline loads offline and its VAE reconstructs photos it never trained on:
    one whole-photo crop of each of the 10 evaluation photos (benchmark: about 22 dB on 32 crops)."""
    pipe = load_pipeline("tiny")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.in_channels == 4
    x = torch.stack(eval_photos_256[:10])
    z = encode_images(pipe, x)
    assert z.shape == (10, 4, 32, 32)
    assert 0.5 < float(z.std()) < 2.0  # the scaling factor makes latents about unit variance
    y = decode_latents(pipe, z)
    psnr = [-10 * math.log10(float(torch.mean((a - b) ** 2))) for a, b in zip(y, x)]
    assert sum(psnr) / len(psnr) > 20.5, psnr
    assert min(psnr) > 14.0, psnr
