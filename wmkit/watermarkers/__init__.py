"""Built-in watermarkers; importing this package registers them."""
from . import gaussian_shading, hidden, peers, periodic, prc, ssl, stable_signature, tree_ring  # noqa: F401
from .base import BitWatermarker, Watermarker

__all__ = ["Watermarker", "BitWatermarker"]
