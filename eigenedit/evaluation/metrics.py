"""Image and distribution metrics computed without downloaded weights: PSNR, SSIM, the Frechet distance, the pixel
change of an edit and an attribute's unit."""

from __future__ import annotations

import math

import numpy as np
import torch


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, valid region)
    of images in [-1, 1], averaged over channels."""
    if a.shape != b.shape or a.ndim != 4:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"ssim needs two (N, C, H, W) batches of the same shape; got {shapes}")
    x, y = ((t.double() + 1) / 2 for t in (a, b))  # data range 1
    channels = x.shape[1]
    w = _gaussian_window(window).repeat(channels, 1, 1, 1).to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, w, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3)).float()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to two feature sets (N, D)."""
    a, b = (f.double().cpu().numpy() for f in (features_a, features_b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^1/2 = sum of sqrt of the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric PSD: stable)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(vals.clip(min=0))) @ vecs.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(inner).sum())


def pixel_change(plain: torch.Tensor, edited: torch.Tensor) -> float:
    """The one image-change measure: mean |edited - plain| over pixels and images, on the 0..1 scale (images in
    [-1, 1], so half their mean absolute difference). Non-finite images count as a change of 1."""
    d = (edited.double() - plain.double()).abs().flatten(1).mean(1) / 2
    return float(torch.nan_to_num(d, nan=1.0, posinf=1.0).mean())


def attribute_scale(values: torch.Tensor, given: float | None = None) -> float:
    """The one unit of a probe attribute: ``given`` (the probe's own scale) when set, else the std of ``values``
    (its valid reads on the unedited images), 1 where that is unmeasurable (under 2 values, constant, non-finite)."""
    if given:
        return float(given)
    std = float(values.double().std()) if len(values) > 1 else math.nan
    return std if math.isfinite(std) and std > 1e-6 else 1.0
