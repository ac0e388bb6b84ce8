"""The one place where ComfyUI's σ-space and the VP (DDPM/DDIM) coordinates meet.

ComfyUI's discrete ε/v-prediction models sample in σ-space: ``x = z / sqrt(ᾱ) = z · sqrt(1 + σ²)`` where ``z`` is
the VP latent ``z_t = sqrt(ᾱ_t) z_0 + sqrt(1 − ᾱ_t) ε``, and

    ᾱ = 1 / (1 + σ²),        σ = sqrt((1 − ᾱ) / ᾱ),
    ε̂ = (x − D(x, σ)) / σ    (D = the model wrapper's denoised output; valid for ε- and v-prediction).

Flow-matching models (SD3, Flux: ``x = (1 − σ) x0 + σ ε``) use other formulas and are not handled here.
"""
from __future__ import annotations

import torch
from torch import Tensor


def alpha_bar_from_sigma(sigma: Tensor) -> Tensor:
    """ᾱ = 1 / (1 + σ²)."""
    return 1.0 / (1.0 + sigma * sigma)


def sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """σ = sqrt((1 − ᾱ) / ᾱ)."""
    return torch.sqrt((1.0 - alpha_bar) / alpha_bar)


def vp_scale(sigma: Tensor) -> Tensor:
    """sqrt(1 + σ²) = 1 / sqrt(ᾱ): the factor from the VP latent z to the σ-space x."""
    return torch.sqrt(1.0 + sigma * sigma)


def x_to_vp(x: Tensor, sigma: Tensor) -> Tensor:
    """z = x / sqrt(1 + σ²)."""
    return x / vp_scale(sigma)


def vp_to_x(z: Tensor, sigma: Tensor) -> Tensor:
    """x = z · sqrt(1 + σ²)."""
    return z * vp_scale(sigma)


def eps_from_denoised(x: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
    """ε̂ = (x − D(x, σ)) / σ (σ > 0)."""
    return (x - denoised) / sigma
