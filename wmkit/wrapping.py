"""`wmkit.wrap(pipe, watermarker, key)`: a diffusers pipeline whose outputs carry a mark.

Integration goes through the scheme's ``PipelineHook`` only, never a forked
pipeline: it may change the call's arguments (Tree-Ring passes watermarked
initial noise as ``latents=``) and may patch pipeline components (Stable
Signature swaps the VAE decoder). ``unwrap()`` undoes the patches and
returns the original pipeline, which behaves exactly as before.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import ConfigError
from .keys import Key


class WatermarkedPipeline:
    """Calls go to the wrapped pipeline with the scheme's changes; attributes pass through."""

    def __init__(self, pipe, watermarker, key: Key):
        self._hook = watermarker.pipeline_hook(key)  # post-hoc schemes and wrong keys stop here
        self._pipe = pipe
        self._watermarker = watermarker
        self._key = key
        self._restore: Callable[[], None] = self._hook.patch(pipe)

    def __call__(self, *args: Any, **kwargs: Any):
        if self._pipe is None:
            raise ConfigError("this pipeline was unwrapped; call the original pipeline instead")
        kwargs = self._hook.call_kwargs(self._pipe, args, dict(kwargs))
        return self._pipe(*args, **kwargs)

    def __getattr__(self, name: str):
        pipe = self.__dict__.get("_pipe")
        if pipe is None:
            raise AttributeError(name)
        return getattr(pipe, name)

    @property
    def watermarker(self):
        return self._watermarker

    def unwrap(self):
        """Undo the scheme's patches and return the original pipeline."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            self._restore()
        return pipe

    def __enter__(self) -> "WatermarkedPipeline":
        return self

    def __exit__(self, *exc) -> None:
        """``with wmkit.wrap(pipe, ...) as marked:``: unwrapped on leaving, errors included
        (Stable Signature's decoder swap must not outlive the block)."""
        self.unwrap()

    def __repr__(self) -> str:
        return f"WatermarkedPipeline({type(self._pipe).__name__}, {self._watermarker.name}, key {self._key.fingerprint})"


def wrap(pipe, watermarker, key: Key, **config: Any) -> WatermarkedPipeline:
    """Wrap ``pipe`` so every output carries ``watermarker``'s mark for ``key``.

    ``watermarker`` is a generation-time scheme instance or its name (then it is
    created with ``pipeline=pipe`` so detection uses the same pipeline)."""
    if isinstance(watermarker, str):
        from .registry import create

        watermarker = create(watermarker, pipeline=pipe, **config)
    return WatermarkedPipeline(pipe, watermarker, key)
