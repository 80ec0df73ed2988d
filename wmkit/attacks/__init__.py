"""Image attacks for robustness evaluation; importing this package registers them all.

Build one with ``parse_attack("jpeg:50")``, ``parse_attack("rotate@0.5")`` (strength in
[0, 1]) or ``parse_attack("center_crop:0.5+jpeg:80")`` (a chain); named lists live in
``SUITES`` / ``get_suite``. See ``base.Attack`` for the sample_params / apply contract.
"""
from .base import Attack, NaturalParam, Params
from .codecs import JPEG, DifferentiableJPEG, WebP
from .compose import Identity, Sequential, parse_attack
from .geometric import CenterCrop, HorizontalFlip, Perspective, RandomCrop, Resize, Rotate
from .suites import SUITES, get_suite
from .valuemetric import Brightness, Contrast, GaussianBlur, GaussianNoise, Hue, Saturation, Sharpness
from .regeneration import Regeneration, Rinse, VAERegeneration
from .paraphrase import Captioner, FixedPrompt, TransformersCaptioner, VisualParaphrase
from .adversarial import AdversarialEmbedding

__all__ = [
    "Attack", "NaturalParam", "Params", "Sequential", "parse_attack", "SUITES", "get_suite",
    "Identity", "CenterCrop", "RandomCrop", "Resize", "Rotate", "HorizontalFlip", "Perspective",
    "JPEG", "WebP", "DifferentiableJPEG",
    "GaussianBlur", "GaussianNoise", "Brightness", "Contrast", "Saturation", "Sharpness", "Hue",
    "Regeneration", "Rinse", "VAERegeneration", "VisualParaphrase", "AdversarialEmbedding",
    "Captioner", "FixedPrompt", "TransformersCaptioner",
]
