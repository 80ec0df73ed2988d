"""Latent diffusion for wmkit: the shipped offline pipeline (wmkit-tiny) or a
user's own diffusers pipeline (Stable Diffusion 1.x/2.x, SDXL), VAE helpers,
DDIM inversion and generation from given initial latents.

    from wmkit.diffusion import load_pipeline, generate, invert
    pipe = load_pipeline()                      # "tiny": weights/tiny-ldm, offline
    images, z = generate(pipe, ["a photo of a cat"], return_latents=True)
    z_hat = invert(pipe, images)                # estimated initial latents
"""
from .inversion import decode_latents, encode_images, generate, initial_latents, invert, invert_latents
from .pipeline import TINY_NAME, load_pipeline, pipeline_label, random_pipeline, resolve_pipeline, tiny_path

# Prompts for generation-time schemes when none are given (demo, `wmkit eval`): subjects the
# tiny pipeline was trained on, so it draws its best; any pipeline understands them.
DEFAULT_PROMPTS = ("a photo of coffee", "a photo of a cat", "a photo of a rocket", "a photo of the moon",
                   "a photo of grass", "a photo of coins")

__all__ = [
    "load_pipeline", "resolve_pipeline", "invert", "invert_latents", "encode_images", "decode_latents", "generate",
    "initial_latents", "pipeline_label", "random_pipeline", "tiny_path", "TINY_NAME", "DEFAULT_PROMPTS",
]
