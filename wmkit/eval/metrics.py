"""Image-quality and detection metrics (nothing here needs downloaded weights)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def psnr(reference: torch.Tensor, distorted: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (data_range 1); inf if identical."""
    if reference.shape != distorted.shape:
        return float("nan")  # geometric attacks change the size: PSNR is undefined
    mse = float(torch.mean((reference.double() - distorted.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(reference: torch.Tensor, distorted: torch.Tensor) -> float:
    """Mean SSIM (11x11 Gaussian window, data_range 1) via kornia."""
    import kornia

    if reference.shape != distorted.shape:
        return float("nan")
    value = kornia.metrics.ssim(reference[None].float(), distorted[None].float(), window_size=11, max_val=1.0)
    return float(value.mean())


def ms_ssim(reference: torch.Tensor, distorted: torch.Tensor) -> float:
    """Multi-scale SSIM (Wang et al. 2003 weights) via kornia's MS-SSIM loss; nan for images too small."""
    import kornia

    if reference.shape != distorted.shape or min(reference.shape[-2:]) < 161:
        return float("nan")  # five scales of an 11-pixel window need >= 161 pixels per side
    loss = kornia.losses.MS_SSIMLoss(data_range=1.0, alpha=1.0, compensation=1.0)
    # MS_SSIMLoss returns alpha * (1 - ms_ssim) * compensation when alpha=1 and no L1 term is used
    value = loss(reference[None].float(), distorted[None].float())
    return float(1.0 - value)


def tpr_at_p_threshold(p_values: Sequence[float], alpha: float) -> float:
    """Fraction of (watermarked) images detected by the analytic test at level alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    return float(np.mean(p < alpha)) if p.size else float("nan")


def roc_curve(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Empirical ROC (fpr, tpr) and AUC; higher score means 'more watermarked'. Ties count half."""
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.concatenate([[0.0], [(pos >= t).mean() for t in thresholds]])
    fpr = np.concatenate([[0.0], [(neg >= t).mean() for t in thresholds]])
    # AUC as the Mann-Whitney statistic: P(pos > neg) + 0.5 P(pos == neg)
    greater = (pos[:, None] > neg[None, :]).mean()
    equal = (pos[:, None] == neg[None, :]).mean()
    return fpr, tpr, float(greater + 0.5 * equal)


def binomial_upper_bound(alpha: float, n: int, confidence: float = 0.99) -> float:
    """The largest false-positive fraction among n null images consistent with rate alpha
    (the `confidence` quantile of Binomial(n, alpha) / n): 'within sampling error'."""
    from scipy import stats

    return float(stats.binom.ppf(confidence, n, alpha) / n) if n else float("nan")
