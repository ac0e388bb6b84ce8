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
