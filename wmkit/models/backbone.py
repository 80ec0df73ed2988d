"""Feature backbones for SSL latent-space marks.

- ``TinyBackbone``: the small CNN wmkit trains self-supervised (wmkit/train/ssl_backbone.py)
  and ships in weights/ssl-backbone/.
- ``ResNet50``: the torchvision ResNet-50 layout (same parameter names), so the
  official DINO ResNet-50 checkpoint loads from a local path without torchvision.
- ``WhitenedBackbone``: backbone + PCA whitening fitted on images, saved together.
Inputs are images in [0, 1] (B, 3, H, W); normalisation happens inside.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Standardize(nn.Module):
    """Each image's channels shifted to the mean and its pixels scaled to the spread of an average
    photo: brightness (a gain) and contrast (a blend with grey) then change nothing the network
    sees, except where they clip. Marks read through it survive those attacks by construction."""

    MEAN, STD = 0.45, 0.25

    def forward(self, x):
        centred = x - x.mean(dim=(2, 3), keepdim=True)
        spread = centred.pow(2).mean(dim=(1, 2, 3), keepdim=True).clamp_min(0.02 ** 2).sqrt()  # flat images: no 1/0, no NaN gradient
        return centred / spread * self.STD + self.MEAN


class BlurPool(nn.Module):
    """Blur with the binomial [1, 2, 1] kernel, then keep every second pixel (Zhang, 2019,
    "Making convolutional networks shift-invariant again"): a stride without aliasing."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16.0
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class TinyBackbone(nn.Module):
    """A small ResNet-style CNN (~0.6 M parameters) ending in global average pooling.

    ``antialias``: every stride-2 convolution becomes a stride-1 convolution, its batch norm
    and ReLU, then ``BlurPool``. A strided network aliases: a mark optimised through it sits
    on the sampling grid, and a shift of a few pixels, a rotation of one degree or a crop
    undoes it (measured: docs/ssl.md); the blurred strides keep most of it.

    ``standardize``: every image goes through ``Standardize`` first (brightness and contrast
    invariance by construction)."""

    def __init__(self, width: int = 32, out_dim: int = 256, antialias: bool = False, standardize: bool = False):
        super().__init__()
        self.config = {"width": width, "out_dim": out_dim, **({"antialias": True} if antialias else {}),
                       **({"standardize": True} if standardize else {})}
        w = width

        def conv_bn_relu(cin, cout, kernel, s):
            layers = [nn.Conv2d(cin, cout, kernel, 1 if antialias else s, kernel // 2, bias=False),
                      nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([BlurPool(cout)] if s == 2 and antialias else [])

        def block(cin, cout, s):
            return nn.Sequential(*conv_bn_relu(cin, cout, 3, s), *conv_bn_relu(cout, cout, 3, 1))

        self.normalize = nn.Sequential(Standardize(), Normalize()) if standardize else Normalize()
        self.features = nn.Sequential(
            *conv_bn_relu(3, w, 5, 2),
            block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2), block(4 * w, 8 * w, 2),
        )
        self.head = nn.Linear(8 * w, out_dim)

    def forward(self, x):
        h = self.features(self.normalize(x))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 with its parameter names, returning the 2048-d pooled feature
    (DINO's ResNet-50 checkpoint has no classifier: its ``fc`` is the identity)."""

    def __init__(self, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
        super().__init__()
        self.config = {"arch": "resnet50", "layers": list(layers), "widths": list(widths)}
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (count, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(count):
                stride = 2 if (j == 0 and i > 0) else 1
                down = None
                if j == 0:
                    down = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
                blocks.append(_Bottleneck(cin, width, stride, down))
                cin = width * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_dim = cin

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_dino_resnet50(path: str | Path) -> ResNet50:
    """The official DINO ResNet-50 backbone (``dino_resnet50_pretrain.pth``) from a local file.

    Loaded strictly: a checkpoint with missing or unexpected weights is an error,
    except the classifier (``fc.*``), which DINO does not train."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint (download dino_resnet50_pretrain.pth yourself; wmkit never downloads)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad checkpoint
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items() if not k.startswith("fc.")}
    model = ResNet50()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("normalize.")]
    if missing or unexpected:
        raise WeightsError(f"{path}: not a ResNet-50 checkpoint (missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
    return model.eval()


class WhitenedBackbone(nn.Module):
    """backbone(x) -> PCA-whitened feature: (f - mean) @ W, W = V diag(1/sqrt(eigenvalues)).

    Whitening makes the feature distribution of natural images roughly isotropic,
    which is what the hypercone test assumes under the null."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("whiten", torch.eye(dim))

    @property
    def dim(self) -> int:
        return int(self.whiten.shape[1])

    @torch.no_grad()
    def fit_whitening(self, features: torch.Tensor, *, rel_eps: float = 1e-6) -> None:
        """Fit on features of natural images. Degenerate directions (eigenvalue below
        rel_eps x the largest: dead units, fewer images than dimensions) are dropped,
        since whitening cannot make them isotropic; ``dim`` can shrink."""
        features = features.double()
        mean = features.mean(0)
        cov = torch.cov((features - mean).T)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        keep = eigenvalues > rel_eps * eigenvalues.max()
        self.mean = mean.float()
        self.whiten = (eigenvectors[:, keep] / torch.sqrt(eigenvalues[keep])[None, :]).float()

    def forward(self, x):
        return (self.backbone(x) - self.mean) @ self.whiten


def save_whitened(model: WhitenedBackbone, folder: str | Path, *, provenance: Optional[dict] = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("backbone.normalize")}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"type": "tiny", **model.backbone.config, **(provenance or {})}, indent=1) + "\n")
    return folder


def for_inference(model: nn.Module) -> nn.Module:
    """A frozen copy for marking and detection: each convolution followed by a batch norm in an
    ``nn.Sequential`` becomes one convolution (eval-mode batch norm is an affine map), and the
    weights are channels-last. About a fifth faster on the CPU (measured on marking); features
    agree with ``model``'s to float rounding."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(sequence.named_children())
        for (name, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(sequence, name, fuse_conv_bn_eval(conv, norm))
                setattr(sequence, norm_name, nn.Identity())
    return model.requires_grad_(False).to(memory_format=torch.channels_last)


def load_whitened(folder: str | Path) -> WhitenedBackbone:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: no backbone here (expected config.json and model.safetensors)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("type") == "resnet50":
        backbone, dim = ResNet50(), 2048
    else:
        backbone = TinyBackbone(width=config["width"], out_dim=config["out_dim"], antialias=config.get("antialias", False),
                                standardize=config.get("standardize", False))
        dim = config["out_dim"]
    model = WhitenedBackbone(backbone, dim)
    state = load_file(folder / "model.safetensors")
    if "whiten" in state:  # the whitened dimension is fitted, not configured
        model.whiten = torch.empty_like(state["whiten"], dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.normalize")]
    if missing or unexpected:
        raise WeightsError(f"{folder}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def whiten_checkpoint(checkpoint: str | Path, images, out: str | Path, *, batch_size: int = 16) -> Path:
    """DINO ResNet-50 checkpoint + PCA whitening fitted on ``images`` -> a backbone folder
    for the SSL schemes (``backbone=out``). Use a few hundred natural images or more."""
    from safetensors.torch import save_file

    model = WhitenedBackbone(load_dino_resnet50(checkpoint), 2048)
    batch = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
    with torch.no_grad():
        features = torch.cat([model.backbone(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)])
    model.fit_whitening(features)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if ".normalize." not in k and not k.startswith("backbone.normalize")}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"type": "resnet50"}, indent=1) + "\n")
    return out
