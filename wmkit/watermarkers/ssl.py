"""SSL latent-space marks (Fernandez et al., 2022): post-hoc marks in the feature space
of a self-supervised backbone, so they inherit its invariance to crops, resizing,
compression.

Marking optimises a perturbation of the image so that its (whitened) feature
moves where the key says, under random augmentations, with two constraints on
the perturbation: a PSNR floor (``target_psnr``, default 40 dB, enforced exactly
by projection after every step and at the end) and a perceptual attenuation that
puts the change where the image is textured (a local-contrast heatmap, the
role SSIM's heatmap plays in the paper).

- ``ssl_zero_bit``: the feature enters the dual hypercone around the key's secret
  unit vector u (around +u or -u, as in the paper). Detection: |cosine(f, u)|,
  p-value from the incomplete beta function (``stats.log_dual_hypercone_p_value``);
  exact over random keys for any image, since u is uniform on the sphere.
- ``ssl_multi_bit``: K secret orthonormal directions carry K bits by the sign
  of the projection (hinge loss); detection decodes signs and uses the bit
  machinery shared with the peers (binomial / calibrated Poisson-binomial).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .. import stats
from ..colour import LUMA
from ..errors import ConfigError, WeightsError
from ..keys import Key
from ..registry import register_watermarker
from .base import BitWatermarker, ScoreWatermarker

DEFAULT_BACKBONE = "tiny"
DEFAULT_PSNR = 40.0  # the paper's operating point (Fernandez et al., 2022)
# augmentations applied while marking: what the mark should survive
MARKING_AUGMENTATIONS = ["identity", "random_crop:0.5", "resize:0.6", "jpeg_diff:60", "gaussian_blur:1", "brightness:1.3", "rotate:8"]


def load_backbone(spec: Any):
    """'tiny' (shipped), a folder with a saved whitened backbone, or a module."""
    if isinstance(spec, torch.nn.Module):
        return spec.eval()
    from ..paths import weights_dir
    from ..models.backbone import load_whitened

    if spec == DEFAULT_BACKBONE:
        folder = weights_dir() / "ssl-backbone"
        if not folder.exists():
            raise WeightsError(
                f"the shipped SSL backbone is missing ({folder}); restore it from git, retrain it with "
                "`python -m wmkit.train.ssl_backbone`, or pass backbone=<folder saved by "
                "wmkit.models.backbone.save_whitened>, e.g. a DINO ResNet-50 whitened with whiten_checkpoint()"
            )
        return load_whitened(folder)
    return load_whitened(spec)


def perceptual_heatmap(images: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Local contrast of the luminance, mean 1 per image: large in texture, small in flat areas."""
    luminance = (LUMA[0] * images[:, 0] + LUMA[1] * images[:, 1] + LUMA[2] * images[:, 2])[:, None]
    pad = window // 2
    mean = F.avg_pool2d(F.pad(luminance, (pad,) * 4, mode="reflect"), window, 1)
    var = F.avg_pool2d(F.pad(luminance**2, (pad,) * 4, mode="reflect"), window, 1) - mean**2
    heat = var.clamp_min(0).sqrt() + 0.01
    return heat / heat.mean(dim=(2, 3), keepdim=True)


WORKING_SIDE = 256  # the backbone reads every image at this shorter side (never upscaled)


def to_working(images: torch.Tensor, side: int = WORKING_SIDE) -> torch.Tensor:
    """(B, 3, H, W) -> the backbone's view: shorter side ``side``, antialiased; smaller images as they are.

    Why a fixed working resolution: the mark then lives where the backbone looks, whatever the
    photo's size, so marking costs the same for a 512 px or a 4000 px photo (the perturbation
    is optimised at working resolution and upsampled), and a resized copy of a marked image is
    read at the same scale as the original."""
    height, width = images.shape[-2:]
    scale = side / min(height, width)
    if scale >= 1.0:
        return images
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def project_psnr(delta: torch.Tensor, target_psnr: float) -> torch.Tensor:
    """Scale each image's perturbation down so that its PSNR (data range 1) is >= the target."""
    max_mse = 10.0 ** (-target_psnr / 10.0)
    mse = delta.pow(2).mean(dim=(1, 2, 3), keepdim=True)
    return delta * torch.clamp(torch.sqrt(max_mse / mse.clamp_min(1e-20)), max=1.0)


class _SSLMark:
    """Shared marking loop; subclasses define the loss on features."""

    min_side: ClassVar[int] = 32

    def _init_ssl(self, *, backbone, target_psnr, steps, lr, seed):
        if not 20.0 <= float(target_psnr) <= 80.0:
            raise ConfigError(f"target_psnr must lie in [20, 80] dB, got {target_psnr}")
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        self.target_psnr = float(target_psnr)
        self.steps = steps
        self.lr = float(lr)
        self.seed = int(seed)
        self._backbone_spec = backbone
        self._backbone = None

    def missing_default_model(self):
        """Why the default model cannot be loaded (None when it can)."""
        try:
            self.backbone
        except WeightsError as exc:
            return str(exc)
        return None

    @property
    def backbone(self):
        if self._backbone is None:
            from ..models.backbone import for_inference

            self._backbone = for_inference(load_backbone(self._backbone_spec))
        return self._backbone

    @property
    def model_name(self) -> str:
        return self._backbone_spec if isinstance(self._backbone_spec, str) else type(self._backbone_spec).__name__

    def _features(self, images: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.backbone(to_working(img[None].float())) for img in images])

    def _mark_one(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Optimise one image's perturbation towards ``target``; deterministic for (image, target, seed)."""
        from ..attacks import parse_attack

        augmentations = [parse_attack(spec) for spec in MARKING_AUGMENTATIONS]
        generator = torch.Generator().manual_seed(self.seed)
        x = image[None].float()
        heat = perceptual_heatmap(x)
        # the perturbation's free parameters live at working resolution (``to_working``): the
        # optimiser's cost does not grow with the photo, and the mark is coarse enough to
        # survive the downscale the detector applies
        raw = torch.zeros_like(to_working(x), requires_grad=True)
        full_size = list(x.shape[-2:])

        def perturbation() -> torch.Tensor:
            upsampled = raw if list(raw.shape[-2:]) == full_size else \
                F.interpolate(raw, size=full_size, mode="bilinear", align_corners=False)
            return project_psnr(heat * upsampled, self.target_psnr)

        optimiser = torch.optim.Adam([raw], lr=self.lr)
        for step in range(self.steps):
            marked = (x + perturbation()).clamp(0, 1)
            augment = augmentations[int(torch.randint(len(augmentations), (1,), generator=generator))]
            feature = self.backbone(augment(to_working(marked), generator=generator))
            loss = self._loss(feature, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            delta = perturbation()
            marked = (x + delta).clamp(0, 1)
            # quantise like a saved file, then re-check the PSNR floor (rounding can only
            # add error), pulling the change back towards the original if needed
            quantised = marked.mul(255).round().div(255)
            while float(10 * torch.log10(1 / (quantised - x).pow(2).mean().clamp_min(1e-20))) < self.target_psnr:
                delta = delta * 0.95
                quantised = (x + delta).clamp(0, 1).mul(255).round().div(255)
        return quantised[0]

    def _mark_all(self, images: list[torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        from ..progress import progress

        with torch.enable_grad():
            return [self._mark_one(img, target) for img in progress(images, desc="mark", unit="img")]


@register_watermarker("ssl_zero_bit")
class SSLZeroBit(_SSLMark, ScoreWatermarker):
    """Zero-bit mark in a self-supervised feature space; dual hypercone test (incomplete beta)."""

    def __init__(self, *, backbone: Any = DEFAULT_BACKBONE, target_psnr: float = DEFAULT_PSNR, steps: int = 100,
                 lr: float = 0.02, target_angle: float = 20.0, seed: int = 0, calibration: Any = "auto"):
        self._init_ssl(backbone=backbone, target_psnr=target_psnr, steps=steps, lr=lr, seed=seed)
        if not 0.0 < target_angle < 90.0:
            raise ConfigError(f"target_angle must lie in (0, 90) degrees, got {target_angle}")
        self.target_angle = float(target_angle)
        self._calibration_spec = calibration

    def config(self) -> dict[str, Any]:
        # marking options do not change the detector, so calibrations ignore them
        return {}

    def direction(self, key: Key) -> torch.Tensor:
        self.check_key(key)
        u = torch.from_numpy(key.rng("ssl/direction").standard_normal(self.backbone.dim)).float()
        return u / u.norm()

    def _loss(self, feature: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # hinge on |cosine|: push the feature into the dual cone of half-angle target_angle
        # around +u and -u, on the side it already leans to (as in the paper: an image whose
        # feature starts on the far side of u need not cross the whole sphere). (A one-sided
        # relu(|f|^2 tan^2 - relu(f.u)^2) has no gradient on f.u on the far side at all.)
        cosine = F.normalize(feature, dim=1) @ u
        return F.relu(np.cos(np.deg2rad(self.target_angle)) - cosine.abs()).mean()

    def embed(self, images, key: Key):
        from ..imageio import restore_form

        u = self.direction(key)
        image_list, batched = self._images(images)
        return restore_form(self._mark_all(image_list, u), batched)

    def extract(self, images) -> torch.Tensor:
        image_list, _ = self._images(images)
        return self._features(image_list)

    def analytic_log_p(self, features: torch.Tensor, key: Key):
        u = self.direction(key)
        # one dot product per image: a (B, D) @ (D,) product sums in an order that depends on B,
        # and a batch must give exactly what single calls give
        cosine = torch.stack([row @ u.double() for row in F.normalize(features.double(), dim=1)]).numpy() \
            if len(features) else np.zeros(0)
        return np.asarray(stats.log_dual_hypercone_p_value(cosine, features.shape[1])), cosine, {}


@register_watermarker("ssl_multi_bit")
class SSLMultiBit(_SSLMark, BitWatermarker):
    """Multi-bit mark: K secret directions, bits by the sign of the projections (hinge loss)."""

    def __init__(self, *, num_bits: int = 32, backbone: Any = DEFAULT_BACKBONE, target_psnr: float = DEFAULT_PSNR,
                 steps: int = 100, lr: float = 0.02, margin: float = 1.0, seed: int = 0, calibration: Any = "auto"):
        BitWatermarker.__init__(self, num_bits=num_bits, calibration=calibration)
        self._init_ssl(backbone=backbone, target_psnr=target_psnr, steps=steps, lr=lr, seed=seed)
        self.margin = float(margin)

    def config(self) -> dict[str, Any]:
        # the backbone decides the decoder's null: a calibration holds for one backbone only
        return {"num_bits": self.num_bits, "backbone": self.model_name}

    def extractor_digest(self) -> str:
        """12 hex digits of sha256 over the backbone's weights (as used: batch norms folded):
        a calibration fitted on a retrained backbone shipped under the same name is refused."""
        from ..models import weights_digest

        return weights_digest({"": self.backbone})

    def directions(self) -> torch.Tensor:
        """K orthonormal carrier directions, fixed by the scheme (like a decoder's weights);
        the key's secret is the message. This differs from the paper's secret directions on
        purpose: decoding needs no key, so one null calibration per backbone serves every
        key (issue: honest p-values for biased decoders), as for the other bit schemes."""
        dim = self.backbone.dim
        if self.num_bits > dim:
            raise ConfigError(f"num_bits {self.num_bits} exceeds the backbone's feature dimension {dim}")
        gaussian = torch.from_numpy(np.random.default_rng(12345).standard_normal((dim, self.num_bits)))
        q, _ = torch.linalg.qr(gaussian)
        return q.T.float()

    def _loss(self, feature: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        proj = feature @ self.directions().T  # (B, K)
        # hinge on the signed projections, in units of the feature's standard scale (whitened: ~1)
        return F.relu(self.margin - signs[None] * proj).mean()

    def _embed_bits(self, images: list[torch.Tensor], bits: np.ndarray) -> list[torch.Tensor]:
        return self._mark_all(images, torch.from_numpy(bits.astype(np.float32) * 2 - 1))

    def decode_bits(self, images: list[torch.Tensor]) -> np.ndarray:
        proj = self._features(images) @ self.directions().T
        return (proj > 0).numpy().astype(np.uint8)
