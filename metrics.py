"""Reconstruction measures shared by the report node and the benchmarks (pure torch).

    MSE = mean((a − b)²),   max|a − b|,   PSNR = 10 · log10(peak² / MSE)   (images in [0, 1], peak = 1)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}; compare the same size and "
                         f"batch (the reconstruction must come from the inversion of this very latent/image).")


def mse(a: Tensor, b: Tensor) -> float:
    _check_pair(a, b, "MSE:")
    return float(((a.double() - b.double()) ** 2).mean())


def max_abs(a: Tensor, b: Tensor) -> float:
    _check_pair(a, b, "max-abs error:")
    return float((a.double() - b.double()).abs().max())


def psnr(a: Tensor, b: Tensor, peak: float = 1.0) -> float:
    """PSNR in dB; +inf for identical inputs."""
    _check_pair(a, b, "PSNR:")
    m = mse(a, b)
    return math.inf if m == 0 else 10.0 * math.log10(peak * peak / m)


ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, which LPIPS(net="alex") builds on


def local_lpips(device="cpu"):
    """(distance, why): ``distance(a, b)`` -> per-image LPIPS (AlexNet; images [B, 3, H, W] in [0, 1]) when the
    ``lpips`` package is installed and torchvision's AlexNet weights are already in the torch hub cache; otherwise
    (None, the reason). Nothing is downloaded: without the cached file the package would fetch it."""
    import importlib.util
    import os
    if importlib.util.find_spec("lpips") is None:
        return None, "the lpips package is not installed (pip install lpips)"
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE)
    if not os.path.isfile(cached):
        return None, f"torchvision's AlexNet weights are not in the torch hub cache ({cached})"
    import lpips
    net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def distance(a: Tensor, b: Tensor) -> Tensor:
        with torch.no_grad():
            return net(a.to(device) * 2 - 1, b.to(device) * 2 - 1).flatten().float().cpu()
    return distance, ""
