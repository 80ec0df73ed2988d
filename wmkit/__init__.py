"""wmkit: invisible watermarks for generative image models.

    import wmkit
    wm = wmkit.create("rivagan")
    key = wmkit.generate_key("rivagan")
    marked = wm.embed(images, key)          # (B, 3, H, W) in [0, 1], or a list
    results = wm.detect(marked, key)        # one DetectionResult (p_value, ...) per image
"""
from .errors import ConfigError, InputError, KeyFileError, MissingDependencyError, WeightsError, WmkitError
from .keys import Key, generate_key, load_key, save_key
from .registry import create, create_attack, list_attacks, list_watermarkers, register_attack, register_watermarker
from . import catalog  # noqa: F401,E402  (hands the registries what fills them on first use)
from .types import DetectionResult

__version__ = "0.1.0"


def verify(images, key: Key, *, method: str | None = None, **config) -> list[DetectionResult]:
    """Test images against a key with the key's method (or ``method``): one result per image."""
    return create(method or key.method, **config).detect(images, key)


__all__ = [
    "create", "list_watermarkers", "create_attack", "list_attacks", "register_watermarker", "register_attack",
    "Key", "generate_key", "load_key", "save_key", "verify", "wrap", "DetectionResult",
    "WmkitError", "ConfigError", "InputError", "KeyFileError", "WeightsError", "MissingDependencyError",
]


_SUBPACKAGES = {"attacks", "calibration", "data", "diffusion", "eval", "imageio", "models", "stats", "train", "watermarkers"}


def __getattr__(name: str):
    """``wmkit.diffusion``, ``wmkit.data``, ... work after a plain ``import wmkit``: each is
    imported on first use, so ``import wmkit`` stays cheap (no diffusers until needed)."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'wmkit' has no attribute {name!r}")


def wrap(pipe, watermarker, key: Key, **config):
    """Wrap a diffusers pipeline so its outputs carry a generation-time mark (see wmkit.wrapping)."""
    from .wrapping import wrap as _wrap

    return _wrap(pipe, watermarker, key, **config)
