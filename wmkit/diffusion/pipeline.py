"""Load a latent diffusion pipeline: wmkit-tiny (shipped, offline) or a local diffusers folder.

Nothing here downloads: every load is ``local_files_only=True``. A user's
Stable Diffusion (1.x, 2.x) or SDXL works when given as a local diffusers
directory (the folder with ``model_index.json``), e.g. a snapshot folder from the
Hugging Face cache.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..errors import ConfigError, WeightsError, require

TINY_NAME = "tiny"


def tiny_path() -> Path:
    """Where the shipped wmkit-tiny pipeline lives (``$WMKIT_WEIGHTS/tiny-ldm``)."""
    from ..paths import weights_dir

    return weights_dir() / "tiny-ldm"


def _resolve(name_or_path: Union[str, os.PathLike]) -> Path:
    if str(name_or_path) == TINY_NAME:
        path = tiny_path()
        if not (path / "model_index.json").is_file():
            raise WeightsError(
                f"the shipped wmkit-tiny pipeline is missing from {path}: restore weights/tiny-ldm from git, "
                "set WMKIT_WEIGHTS to a folder that has it, or retrain it (python -m wmkit.train.tiny_ldm all)"
            )
        return path
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise WeightsError(
            f"no diffusion pipeline at '{path}': give 'tiny' or a local diffusers folder "
            "(the directory that holds model_index.json; nothing is downloaded)"
        )
    if not path.is_dir() or not (path / "model_index.json").is_file():
        raise WeightsError(
            f"'{path}' is not a diffusers pipeline folder (no model_index.json); give the pipeline's root "
            "directory, e.g. the snapshot folder of stable-diffusion-v1-5"
        )
    return path


@contextlib.contextmanager
def quiet_transformers():
    """Importing diffusers' pipelines makes transformers warn that torchvision is missing
    (wmkit avoids torchvision on purpose; the Pillow fallback it names is what runs). Hide
    those import-time warnings from wmkit's output, then restore the user's verbosity."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(before)


def load_pipeline(
    name_or_path: Union[str, os.PathLike] = TINY_NAME,
    *,
    device: Optional[Union[str, torch.device]] = None,
    torch_dtype: Optional[torch.dtype] = None,
    progress: bool = False,
):
    """A diffusers latent diffusion pipeline, offline.

    ``name_or_path``: ``"tiny"`` (the default: wmkit's shipped pipeline, a
    ``StableDiffusionPipeline``) or a local diffusers folder (SD 1.x/2.x, SDXL,
    ...). Raises ``WeightsError`` when the folder is missing, is not a pipeline,
    cannot be loaded offline, or has no VAE + UNet (wmkit needs a latent UNet
    pipeline for inversion).
    """
    import warnings

    with warnings.catch_warnings():
        # in a notebook without ipywidgets, diffusers' `tqdm.auto` import warns about it;
        # wmkit turns diffusers' bars off below, so the warning is about nothing a user sees
        warnings.filterwarnings("ignore", message="IProgress not found")
        diffusers = require("diffusers", "latent diffusion pipelines")

    path = _resolve(name_or_path)
    kwargs = {"local_files_only": True}
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        # what diffusers falls back to without accelerate anyway, said outright so it does
        # not print a warning (asking to install accelerate) that a user need not act on
        kwargs["low_cpu_mem_usage"] = False
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    # loading bars from diffusers/transformers would clutter wmkit's own output
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        with quiet_transformers():
            if str(name_or_path) == TINY_NAME:
                pipe = diffusers.StableDiffusionPipeline.from_pretrained(path, **kwargs)
            else:
                pipe = diffusers.DiffusionPipeline.from_pretrained(path, **kwargs)
    except (OSError, ValueError, EnvironmentError, KeyError, AttributeError, TypeError) as exc:
        raise WeightsError(f"could not load the diffusion pipeline in '{path}' offline: {exc}".splitlines()[0]) from exc
    for part in ("vae", "unet", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise WeightsError(
                f"the pipeline in '{path}' ({type(pipe).__name__}) has no {part}: wmkit needs a latent diffusion "
                "pipeline with a VAE, a UNet and a scheduler (Stable Diffusion 1.x/2.x, SDXL, wmkit-tiny)"
            )
    if device is not None:
        pipe = pipe.to(device)
    # channels-last convolution weights (the values are unchanged): measured on the 2-core CPU
    # with the tiny pipeline, a 2-step inversion of a 256 px image 0.25 -> 0.17 s and a 10-step
    # one 0.64 -> 0.54 s; diffusers recommends the same layout for its UNets on GPUs
    for module in (pipe.vae, pipe.unet):
        module.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


_SHARED: dict[str, Any] = {}  # pipelines loaded by name or path with share=True


def resolve_pipeline(source: Any, *, share: bool = True) -> Any:
    """A pipeline from a name or folder (loaded offline with ``load_pipeline``; with ``share``,
    once per process and shared by every caller naming the same string: the attacks and the
    evaluation), a pipeline object, or a zero-argument factory returning either. A scheme
    that patches its pipeline (Stable Signature's decoder) loads its own: ``share=False``."""
    if source is None:
        raise ConfigError("a diffusion pipeline is needed: pass pipeline='tiny', a local diffusers folder or a pipeline object")
    if isinstance(source, (str, bytes, os.PathLike)):
        name = os.fsdecode(source)
        if not share:
            return load_pipeline(name)
        if name not in _SHARED:
            _SHARED[name] = load_pipeline(name)
        return _SHARED[name]
    if getattr(source, "vae", None) is not None or getattr(source, "unet", None) is not None:
        return source
    if callable(source):
        return resolve_pipeline(source(), share=share)
    raise ConfigError(f"pipeline must be a diffusers pipeline, 'tiny' or a folder path, got {type(source).__name__}")


def pipeline_label(spec) -> str:
    """How calibrations and caches name a pipeline given as a name, folder or object:
    'tiny' for the shipped one (by name or loaded from its folder), else its path or class."""
    source = str(spec) if isinstance(spec, (str, Path)) else getattr(spec, "name_or_path", None)
    if not source:
        return type(spec).__name__
    if source != TINY_NAME and Path(source).exists() and Path(source).resolve() == tiny_path().resolve():
        return TINY_NAME
    return source


def random_pipeline(seed: int = 0, *, scaling_factor: float = 1.0):
    """A tiny randomly initialised StableDiffusionPipeline built from configs
    (no files, no network): for unit tests of the code paths, useless for images."""
    import tempfile

    with quiet_transformers():
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..train.tiny_ldm import SCHEDULER_CONFIG, build_tokenizer, text_config, unet_config, vae_config

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    vae = AutoencoderKL(**{**vae_config(small=True), "scaling_factor": scaling_factor}).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(len(tokenizer), small=True))).eval()
    unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size, small=True)).eval()
    scheduler = DDIMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")})
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_pipeline(pipe) -> None:
    for part in ("vae", "unet", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise ConfigError(f"{type(pipe).__name__} has no {part}: wmkit needs a latent diffusion pipeline")
