"""Visual paraphrase (Barman et al. 2024): caption the image, then redraw it with image-to-image
diffusion guided by that caption.

``paraphrase:0.5`` runs diffusers' image-to-image pipeline (built from the attack's pipeline
with ``AutoPipelineForImage2Image.from_pipe``: Stable Diffusion 1.x/2.x, SDXL, wmkit-tiny) at
img2img strength ``denoise`` = 0.5; strength s -> denoise = 0.8 s. ``steps`` is the number of
denoising steps actually run (the pipeline is called with ceil(steps / denoise) inference
steps), ``guidance`` the classifier-free guidance scale.

The text comes from, in order: ``prompt=`` (a fixed prompt, the same for every image), or
``captioner=`` (a :class:`Captioner`, or the path of a local transformers captioning model:
BLIP, BLIP-2, Kosmos-2, Florence-style image-text-to-text models), or else the empty prompt
(then the attack is an unconditional regeneration with the img2img scheduler).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

import torch

from ..errors import ConfigError, WeightsError, require
from ..registry import register_attack
from .base import NaturalParam, format_value
from .regeneration import DEFAULT_PIPELINE, PipelineAttack, _generator, _positive_int


@runtime_checkable
class Captioner(Protocol):
    """Anything that turns images (B, 3, H, W) in [0, 1] into one caption per image."""

    def __call__(self, images: torch.Tensor) -> list[str]: ...


class FixedPrompt:
    """The same user-given text for every image."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ConfigError(f"a prompt must be text, got {type(text).__name__}")
        self.text = text

    def __call__(self, images: torch.Tensor) -> list[str]:
        return [self.text] * len(images)

    def __repr__(self) -> str:
        return f"FixedPrompt({self.text!r})"


class TransformersCaptioner:
    """A transformers captioning model from a local folder (never downloaded).

    Loads ``AutoProcessor`` and ``AutoModelForImageTextToText`` (transformers 5; falls back to
    ``AutoModelForVision2Seq`` on 4.x, then to BLIP's own classes) with ``local_files_only=True``
    and the PIL image processors (``use_fast=False``: no torchvision needed). ``prompt`` is an
    optional text prefix some models condition on (BLIP: "a photography of"; Kosmos-2:
    "<grounding>An image of"; Florence-2: "<MORE_DETAILED_CAPTION>"). Captions are generated
    greedily, so they are deterministic. Raises ``WeightsError`` when the folder is missing or
    cannot be loaded.
    """

    def __init__(self, path: Union[str, os.PathLike], *, prompt: Optional[str] = None, max_new_tokens: int = 30,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        require("transformers", "captioning for the visual paraphrase attack")
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise WeightsError(f"no captioning model at '{self.path}': give a local transformers model folder (nothing is downloaded)")
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.processor, self.model = _load_captioner(self.path)
        if device is not None:
            self.model.to(device)
        self.model.eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        from PIL import Image

        pil = [
            Image.fromarray((image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8"))
            for image in images
        ]
        kwargs: dict[str, Any] = {"images": pil, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(pil)
        inputs = self.processor(**kwargs).to(self.model.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if self.prompt and "input_ids" in inputs and not self.model.config.is_encoder_decoder and ids.shape[1] > inputs["input_ids"].shape[1]:
            ids = ids[:, inputs["input_ids"].shape[1]:]  # decoder-only models echo the prompt
        captions = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(c.split()) for c in captions]

    def __repr__(self) -> str:
        return f"TransformersCaptioner({str(self.path)!r})"


def _load_captioner(path: Path):
    import transformers

    errors = []
    try:
        processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True, use_fast=False)
    except Exception as exc:  # noqa: BLE001 - every failure means "cannot load this folder"
        raise WeightsError(f"could not load a captioning processor from '{path}' offline: {exc}".splitlines()[0]) from exc
    names = ["AutoModelForImageTextToText", "AutoModelForVision2Seq", "BlipForConditionalGeneration"]
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        try:
            return processor, cls.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise WeightsError(f"could not load a captioning model from '{path}' offline ({'; '.join(errors)})")


def make_captioner(prompt: str = "", captioner: Any = "") -> Captioner:
    """The text source of a paraphrase: a fixed prompt, a captioner (object or model path), or ''."""
    if prompt and captioner:
        raise ConfigError("paraphrase: give a prompt or a captioner, not both")
    if captioner:
        if isinstance(captioner, (str, os.PathLike)):
            return TransformersCaptioner(captioner)
        if not callable(captioner):
            raise ConfigError(f"paraphrase: captioner must be callable (images -> captions) or a model path, got {type(captioner).__name__}")
        return captioner
    return FixedPrompt(prompt or "")


@register_attack("paraphrase")
class VisualParaphrase(PipelineAttack):
    """Visual paraphrase: caption the image, then img2img-redraw it guided by the caption; strength s -> denoise 0.8 s."""

    param = NaturalParam(
        "denoise", float, low=0.0, high=1.0, default=0.5, at_zero=0.0, at_one=0.8, identity=0.0,
        unit="img2img strength",
    )
    options = {"prompt": "", "captioner": "", "steps": 10, "guidance": 7.5}
    random_keys = ("seed",)
    stochastic = True

    def __init__(self, *, denoise: float = 0.5, prompt: str = "", captioner: Any = "", steps: int = 10,
                 guidance: float = 7.5, pipeline: Any = DEFAULT_PIPELINE) -> None:
        super().__init__(pipeline=pipeline)
        self.denoise = self._validated(denoise)
        if not isinstance(prompt, str):
            raise ConfigError(f"paraphrase: prompt must be text, got {prompt!r}")
        self.prompt = prompt
        self.steps = _positive_int(steps, "paraphrase", "steps")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= float(guidance) <= 50.0:
            raise ConfigError(f"paraphrase: guidance must be a number in [0, 50], got {guidance!r}")
        self.guidance = float(guidance)
        if prompt and captioner:
            raise ConfigError("paraphrase: give a prompt or a captioner, not both")
        # a path is kept as text (it prints in describe()) and loaded on first use
        self.captioner = str(captioner) if isinstance(captioner, (str, os.PathLike)) else ""
        object.__setattr__(self, "_captioner_source", captioner)
        object.__setattr__(self, "_captioner_obj", None)
        object.__setattr__(self, "_img2img", None)

    def describe(self) -> str:
        head = f"{self.name}:{format_value(self.denoise)}" if not self._off else f"{self.name}@0"
        changed = []
        for key, default in self.options.items():
            value = getattr(self, key)
            if value != default:
                changed.append(f"{key}={value if isinstance(value, str) else format_value(value)}")
        return ",".join([head, *changed])

    def get_captioner(self) -> Captioner:
        if self._captioner_obj is None:
            object.__setattr__(self, "_captioner_obj", make_captioner(self.prompt, self._captioner_source))
        return self._captioner_obj

    def captions(self, images: torch.Tensor) -> list[str]:
        captions = self.get_captioner()(images)
        if not isinstance(captions, (list, tuple)) or len(captions) != len(images) or not all(isinstance(c, str) for c in captions):
            raise ConfigError("paraphrase: the captioner must return one string per image")
        return list(captions)

    def _image_to_image(self, pipe):
        cached = self._img2img
        if cached is None or cached[0] is not pipe:
            from diffusers import AutoPipelineForImage2Image

            img2img = AutoPipelineForImage2Image.from_pipe(pipe)
            img2img.set_progress_bar_config(disable=True)
            cached = (pipe, img2img)
            object.__setattr__(self, "_img2img", cached)
        return cached[1]

    @torch.no_grad()
    def _attack_one(self, pipe, image, params):
        denoise = float(params["denoise"])
        caption = self.captions(image)[0]
        img2img = self._image_to_image(pipe)
        total = int(pipe.scheduler.config.num_train_timesteps)
        inference_steps = min(total, max(self.steps, math.ceil(self.steps / denoise)))
        if int(inference_steps * denoise) < 1:  # diffusers would run no step at all
            inference_steps = min(total, math.ceil(1.0 / denoise))
        result = img2img(
            prompt=[caption], image=image.to(pipe.device), strength=denoise, num_inference_steps=inference_steps,
            guidance_scale=self.guidance, height=image.shape[-2], width=image.shape[-1],
            generator=_generator(params["seed"]), output_type="pt",
        )
        return result.images.float().clamp(0, 1).cpu()


def paraphrase(images: torch.Tensor, *, pipeline: Any = DEFAULT_PIPELINE, denoise: float = 0.5,
               captioner: Optional[Union[Captioner, str]] = None, prompt: str = "",
               generator: Optional[torch.Generator] = None, **options: Any) -> torch.Tensor:
    """Functional form: ``paraphrase(images, captioner=FixedPrompt("a cat"), denoise=0.6)``."""
    attack = VisualParaphrase(denoise=denoise, prompt=prompt, captioner=captioner or "", pipeline=pipeline, **options)
    return attack(images, generator=generator)


__all__: Sequence[str] = ["Captioner", "FixedPrompt", "TransformersCaptioner", "VisualParaphrase", "make_captioner", "paraphrase"]
