"""Deterministic DDIM (η = 0) sampling and inversion in ComfyUI σ-space.

Notation (DDIM, Song et al. 2021; the inversion as used by null-text inversion, StyleDiffusion and CASO):
for noise levels σ (ᾱ = 1/(1+σ²)) and the VP latent z = x/sqrt(1+σ²),

    x̂0 = x_σ − σ ε̂,        x_{σ'} = x̂0 + σ' ε̂ = x_σ + (σ' − σ) ε̂                       (DDIM step)

which is one Euler step in σ-space; ComfyUI's ``euler``/``ddim`` samplers take exactly this step with
ε̂ = ε_θ(x_σ, σ), so they regenerate what this module inverts.

Inversion runs the same update towards larger σ. Since ε at the target level is unknown, ε̂ is evaluated on the
current VP latent z_σ at the *next* level σ' (the usual DDIM-inversion approximation, identical to diffusers'
``DDIMInverseScheduler``):

    ε̂ = ε_θ(z_σ, σ'),  obtained from the σ-space denoiser as  x_in = z_σ·sqrt(1+σ'²),  ε̂ = (x_in − D(x_in, σ'))/σ'
    x_{σ'} = x_σ + (σ' − σ) ε̂

The approximation error is what makes DDIM inversion inexact (it grows with the CFG scale); EDICT removes it.

All functions take a denoiser ``D(x, σ) -> x0`` (the CFG-combined prediction of a ComfyUI model wrapper) and work
on any tensor shape; σ is a 0-d tensor or float.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from . import coords_flow
from .coords import eps_from_denoised, vp_scale
from .steps import Callback, Step

Denoiser = Callable[[Tensor, Tensor], Tensor]


def ddim_step(x: Tensor, eps: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """x_{σ'} = x_σ + (σ' − σ) ε̂: the DDIM η=0 update between any two levels, in either direction."""
    return x + (sigma_next - sigma) * eps


def ddim_inverse_eps(denoiser: Denoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """ε̂ = ε_θ(z_σ, σ') for the inversion step σ -> σ' (σ' > σ ≥ 0); returns (ε̂, x0 estimate at σ')."""
    x_in = x * (vp_scale(sigma_next) / vp_scale(sigma))
    denoised = denoiser(x_in, sigma_next)
    return eps_from_denoised(x_in, denoised, sigma_next), denoised


def check_schedule(sigmas: Tensor, who: str) -> None:
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"{who}: SIGMAS must hold at least two values (one step), got shape {tuple(sigmas.shape)}.")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"{who}: SIGMAS contain NaN or inf: {sigmas.tolist()}")
    if (sigmas < 0).any():
        raise ValueError(f"{who}: SIGMAS must be non-negative.")
    d = sigmas[1:] - sigmas[:-1]
    # the official grid (Value Embedding Sigmas, EDICT Sigmas) repeats its lowest level: an identity step at the
    # clean end (the last pair of a descending list, the first of a flipped one)
    falling = (d[:-1] < 0).all() and d[-1] <= 0 and (d[-1] < 0 or d.numel() > 1)
    rising = (d[1:] > 0).all() and d[0] >= 0 and (d[0] > 0 or d.numel() > 1)
    if not (falling or rising):
        raise ValueError(f"{who}: SIGMAS must be strictly monotonic (a scheduler's descending list, or a flipped "
                         f"one; only the lowest level may repeat, as on the official grid), got "
                         f"{[round(v, 4) for v in sigmas.tolist()]}.")


def ascending_levels(sigmas: Tensor) -> Tensor:
    """The noise levels an inversion walks through, lowest first, whichever way the schedule was given.

    A scheduler's SIGMAS (descending, ending at 0) and the same list reversed by FlipSigmas (ascending, its 0
    replaced by 1e-4) give the same walk."""
    return sigmas if sigmas[0] < sigmas[-1] else sigmas.flip(0)


def ddim_invert(denoiser: Denoiser, x0: Tensor, sigmas: Tensor,
                callback: Optional[Callback] = None) -> Tensor:
    """Invert a clean latent x0 (σ-space at the lowest level) along ``sigmas`` to x at the highest level.

    ``sigmas`` may be descending (as the regeneration will use them) or ascending; see ``ascending_levels``."""
    check_schedule(sigmas, "DDIM inversion")
    levels = ascending_levels(sigmas)
    x = x0
    for i in range(levels.numel() - 1):
        s, s_next = levels[i], levels[i + 1]
        if s_next == s:  # the official grid's repeated lowest level: an identity step, no model call
            denoised = None
        else:
            eps, denoised = ddim_inverse_eps(denoiser, x, s, s_next)
            x = ddim_step(x, eps, s, s_next)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, denoised, s, s_next))
    return x


def ddim_sample(denoiser: Denoiser, x: Tensor, sigmas: Tensor,
                callback: Optional[Callback] = None) -> Tensor:
    """Deterministic DDIM sampling along descending ``sigmas`` (ε̂ = ε_θ(x_σ, σ)); equals ComfyUI's ``euler``."""
    check_schedule(sigmas, "DDIM sampling")
    if sigmas[0] < sigmas[-1]:
        raise ValueError("DDIM sampling: SIGMAS must be descending.")
    for i in range(sigmas.numel() - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        x = ddim_step(x, eps_from_denoised(x, denoised, s), s, s_next)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, denoised, s, s_next))
    return x


# -- flow-matching (CONST) models: the same walk with the velocity (``samplers.coords_flow``) -----------------------

def flow_invert(denoiser: Denoiser, x0: Tensor, sigmas: Tensor, callback: Optional[Callback] = None) -> Tensor:
    """Invert a clean latent along a flow schedule (σ in [0, 1]) to x at its highest level:
    x_{σ'} = x_σ + (σ' − σ)·v̂(x_σ, σ'), v̂ = (x − D(x, σ'))/σ' (the model input is x itself: no VP rescaling)."""
    check_schedule(sigmas, "DDIM inversion")
    coords_flow.check_flow_sigmas(sigmas, "DDIM inversion")
    levels = ascending_levels(sigmas)
    x = x0
    for i in range(levels.numel() - 1):
        s, s_next = levels[i], levels[i + 1]
        if s_next == s:  # a repeated lowest level: an identity step
            continue
        denoised = denoiser(x, s_next)
        x = coords_flow.euler_step(x, coords_flow.velocity_from_denoised(x, denoised, s_next), s, s_next)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, denoised, s, s_next))
    return x


def flow_sample(denoiser: Denoiser, x: Tensor, sigmas: Tensor, callback: Optional[Callback] = None) -> Tensor:
    """Euler sampling of a flow model along descending ``sigmas``: what ComfyUI's ``euler`` does on it."""
    check_schedule(sigmas, "DDIM sampling")
    coords_flow.check_flow_sigmas(sigmas, "DDIM sampling")
    if sigmas[0] < sigmas[-1]:
        raise ValueError("DDIM sampling: SIGMAS must be descending.")
    for i in range(sigmas.numel() - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        x = coords_flow.euler_step(x, coords_flow.velocity_from_denoised(x, denoised, s), s, s_next)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, denoised, s, s_next))
    return x
