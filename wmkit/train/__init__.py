"""Recipes that produce what ships in weights/ (run as `python -m wmkit.train.NAME`)."""
from __future__ import annotations

import torch


def training_device(name: str = "cpu") -> torch.device:
    """The device a recipe trains on (``--device``): "cpu", "cuda" or "cuda:N".

    On a GPU, TF32 matrix products are allowed (the models are small and the
    losses noisy; TF32 loses nothing that matters here and is several times faster).
    The weights are always saved from a CPU copy, so what ships does not depend on it.
    """
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: no CUDA device is available here (use --device cpu)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return device


def autocast(device: torch.device):
    """bfloat16 autocast on a GPU (twice the speed of fp32 for these convolutions), nothing on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def save_checkpoint(path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically (``wmkit.atomic.write_bytes``), so a run stopped
    mid-write leaves the previous checkpoint whole."""
    import io

    from ..atomic import write_bytes

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue(), overwrite=True)


def load_checkpoint(path) -> dict:
    """What ``save_checkpoint`` wrote; a clear exit when there is none to resume from."""
    from pathlib import Path

    if not Path(path).is_file():
        raise SystemExit(f"--resume: no checkpoint at {path} (start without --resume)")
    return torch.load(path, map_location="cpu", weights_only=False)
