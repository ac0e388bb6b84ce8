"""BDIA: exact diffusion inversion via bi-directional integration approximation (Zhang, Lewis, Kleijn, ECCV 2024),
in ComfyUI σ-space, at one model call per step.

On a descending list of levels σ_0 > σ_1 > … > σ_n, with z_i the state at σ_i (the VP latent z = x/sqrt(1+σ²) of a
ε/v-prediction model, or x itself on a flow model: ``edict.Coordinates``) and d̂_i = d̂(z_i, σ_i) the model's ε̂ (the
velocity v̂ on a flow model) at z_i, let the DDIM step (the flow Euler step) from σ_i to any level σ be

    Φ_i(σ) = a(σ_i, σ)·z_i + b(σ_i, σ)·d̂_i        (``edict.step_coefficients`` / ``flow_step_coefficients``)

so that Φ_i(σ_{i+1}) is the step forward in time and Φ_i(σ_{i−1}) the step back to where z_{i−1} lies. The paper's
update (its eq. 13, with its Δ(t_i → t) = Φ_i(σ) − z_i and its indices counted the other way) is

    z_{i+1} = z_{i−1} − (1 − γ)·(z_{i−1} − z_i) − γ·(Φ_i(σ_{i−1}) − z_i) + (Φ_i(σ_{i+1}) − z_i)
            = Φ_i(σ_{i+1}) + γ·(z_{i−1} − Φ_i(σ_{i−1}))                                  (``bdia_step``)

It is linear in (z_{i−1}, z_i) given d̂_i, and d̂_i depends on z_i alone, so (z_i, z_{i+1}) determines z_{i−1}:

    z_{i−1} = (z_{i+1} − Φ_i(σ_{i+1}))/γ + Φ_i(σ_{i−1})                                   (``bdia_step_inverse``)

γ = 0 is DDIM; γ = 1 is the symmetric (leapfrog) integrator; the paper edits with γ = 0.5. A chain needs two
consecutive states: generation takes a plain DDIM step σ_0 → σ_1 first (the paper's algorithm) and then BDIA steps
i = 1 … n−1; inversion starts from the clean latent with a DDIM inversion step σ_n → σ_{n−1} (ε̂ at the current
latent and the next level, as ``samplers.ddim`` inverts; the identity when the list ends in a repeated level, the
official schedule's last step) and then undoes BDIA steps n−1 … 1, ending with the pair (z_0, z_1) at (σ_0, σ_1).
Regenerating from that pair runs steps 1 … n−1 and gives the clean latent back exactly, for any model, conditioning
and CFG. Model calls: n for a generation, n − 1 (+1 unless the list ends in a repeated level) for an inversion, n − 1
for a regeneration: DDIM's count, against EDICT's 2n.

Stability: the two-step recurrence has the roots 1 and −γ in the sampling direction, so the inversion carries its
second ("parasitic") mode as (−1/γ)^k: whatever z_{i−1} − Φ_i(σ_{i−1}) the first inverted step leaves (the DDIM
inversion step's error) grows by 1/γ a step, ``growth`` = γ^−(n−1) over n steps. Regeneration damps it by γ a step,
so the round trip is exact while the float64 state keeps enough digits beside the grown mode: measured on the shapes
world: bit-exact in the float32 LATENT up to a growth of 5e5 (γ 0.5, 20 steps; pair std 2e6), 9.5e-6 at 4e8 (γ 0.6,
40 steps), 3.4e-4 at 6e11 (γ 0.5, 40 steps: the paper's edit setting; pair std 5e11). ``check_growth`` warns above
``EXACT_GROWTH`` and refuses above ``FINITE_GROWTH`` (1e16, EDICT's bound: the pair's values, about 0.15·growth on
the shapes world — max |z| 7.7e4 at 20 steps, 4.2e10 at 40, 3.4e16 at 60 with γ 0.5 — are what the model is evaluated
on, and its float32 normalisations overflow past ~1e19: NaN at 80 steps). The inverted pair of a
small γ is therefore not a Gaussian-looking latent; a prompt edit still works on it, and better: the edit acts only
where the mode has died down, late in the chain, which keeps the layout (shapes world, red → blue on 6 held-out
objects, 40 steps: γ 0.5–0.6 blue 6/6, shape kept 6/6, background 32.5 dB; γ 0.8 6/6, 6/6, 30.4 dB; γ 0.9 25.2 dB;
γ 1 shape kept 3/6, 23.1 dB; on the example circle γ ≤ 0.6 kept the circle at 16, 20 and 40 steps, γ ≥ 0.7 made it
a square). Hence the paper's γ 0.5 as the default, with at most 20 steps for an exact round trip.

Coordinates and the clean end as in ``samplers.edict`` (a repeated final σ marks the clean latent at level 0).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor

from . import edict
from .edict import VP, Coordinates, Denoiser, EpsFromDenoiser
from .steps import Callback, Step

log = logging.getLogger(__name__)

DEFAULT_GAMMA = 0.5   # the paper's: exact inversion up to 20 steps (0.8: up to 50); edits best here (module doc)
EXACT_GROWTH = 1e6    # above: the round trip is approximate (measured 9.5e-6 at 4e8, 3.4e-4 at 6e11)
FINITE_GROWTH = edict.MAX_AMPLIFICATION  # above: refused (the model would be evaluated past its float32 range)


def check_gamma(gamma: float, who: str = "BDIA", invert: bool = True) -> None:
    lo_ok = gamma > 0.0 if invert else gamma >= 0.0
    if not (lo_ok and gamma <= 1.0):
        need = "(0, 1] to be inverted (γ = 0 is DDIM, which is not exact)" if invert else "[0, 1]"
        raise ValueError(f"{who}: gamma must be in {need}, got {gamma}; the paper edits with 0.5.")


def growth(gamma: float, steps: int) -> float:
    """How much an inversion of ``steps`` steps amplifies the parasitic mode: γ^−(steps − 1)."""
    if gamma <= 0:
        return math.inf
    log_g = -math.log(gamma) * max(steps - 1, 0)
    return math.inf if log_g > 700 else math.exp(log_g)


def max_steps(gamma: float, limit: float = EXACT_GROWTH) -> int:
    """The most steps whose inversion amplifies by at most ``limit`` at this γ."""
    return 10**9 if gamma >= 1.0 else 1 + int(math.log(limit) / -math.log(gamma))


def check_growth(gamma: float, steps: int, who: str = "BDIA") -> Optional[str]:
    """Refuses a chain whose growth passes FINITE_GROWTH (the model could not evaluate it); returns a warning (None if
    exact) for one whose round trip is approximate."""
    g = growth(gamma, steps)
    if g > FINITE_GROWTH:
        raise ValueError(f"{who}: {steps} steps at gamma {gamma} amplify the inversion's second mode by {g:.3g} "
                         f"(1/gamma per step): the latents the model is evaluated on would pass what its float32 "
                         f"arithmetic carries (NaN after the work); use at most "
                         f"{max_steps(gamma, FINITE_GROWTH)} steps at this gamma, or a gamma nearer 1 (at most "
                         f"{max_steps(gamma)} steps stay exact).")
    if g > EXACT_GROWTH:
        return (f"{who}: {steps} steps at gamma {gamma} amplify the inversion's second mode by {g:.3g}, so the round "
                f"trip is approximate, not exact (measured 9.5e-6 at 4e8, 3.4e-4 at 6e11); at most "
                f"{max_steps(gamma)} steps at this gamma, or gamma >= {min_gamma(steps):.2f} at {steps} steps, stay "
                f"exact.")
    return None


def min_gamma(steps: int, limit: float = EXACT_GROWTH) -> float:
    """The smallest γ whose ``steps``-step inversion stays within ``limit``."""
    return 1.0 if steps <= 1 else math.exp(-math.log(limit) / (steps - 1))


def phi(coords: Coordinates, z: Tensor, d: Tensor, sigma: Tensor, sigma_to: Tensor) -> Tensor:
    """Φ(σ_to) = a(σ, σ_to)·z + b(σ, σ_to)·d̂: the DDIM (flow Euler) step of z from σ to σ_to."""
    a, b = coords.coefficients(sigma, sigma_to)
    return a * z + b * d


def bdia_step(coords: Coordinates, z_prev: Tensor, z: Tensor, d: Tensor, sigmas: Tensor, i: int,
              gamma: float) -> Tensor:
    """z_{i+1} = Φ_i(σ_{i+1}) + γ·(z_{i−1} − Φ_i(σ_{i−1})), d = d̂(z_i, σ_i)."""
    s_prev, s, s_next = sigmas[i - 1], sigmas[i], sigmas[i + 1]
    return phi(coords, z, d, s, s_next) + gamma * (z_prev - phi(coords, z, d, s, s_prev))


def bdia_step_inverse(coords: Coordinates, z: Tensor, z_next: Tensor, d: Tensor, sigmas: Tensor, i: int,
                      gamma: float) -> Tensor:
    """z_{i−1} = (z_{i+1} − Φ_i(σ_{i+1}))/γ + Φ_i(σ_{i−1}): the exact inverse of ``bdia_step``."""
    s_prev, s, s_next = sigmas[i - 1], sigmas[i], sigmas[i + 1]
    return (z_next - phi(coords, z, d, s, s_next)) / gamma + phi(coords, z, d, s, s_prev)


def check_bdia_schedule(sigmas: Tensor, who: str) -> None:
    edict.check_edict_schedule(sigmas, who)
    if sigmas.numel() < 3:
        raise ValueError(f"{who}: BDIA needs at least two steps (three SIGMAS), got {sigmas.numel() - 1}.")


def prepare(sigmas: Tensor, gamma: float, state_dtype: torch.dtype, who: str, invert: bool) -> Tensor:
    check_bdia_schedule(sigmas, who)
    check_gamma(gamma, who, invert)
    edict.check_state_dtype(state_dtype, who)
    return sigmas.to(state_dtype)


def bdia_sample(denoiser: Denoiser, z: Tensor, sigmas: Tensor, gamma: float = DEFAULT_GAMMA,
                z_next: Optional[Tensor] = None, state_dtype: torch.dtype = torch.float64,
                model_dtype: Optional[torch.dtype] = None, callback: Optional[Callback] = None,
                coords: Coordinates = VP) -> tuple[Tensor, Tensor]:
    """Denoise z at sigmas[0] along the descending ``sigmas``; returns (the state at ``edict.end_sigma``, the one
    before it). Generation (``z_next`` None) takes a DDIM step to sigmas[1] first; regeneration starts from an
    inverted pair (z at sigmas[0], ``z_next`` at sigmas[1])."""
    sigmas = prepare(sigmas, gamma, state_dtype, "BDIA sampling", invert=False)
    eps = EpsFromDenoiser(denoiser, model_dtype, coords)
    n = sigmas.numel() - 1
    z_prev = z.to(state_dtype)
    if z_next is None:
        d = eps(z_prev, sigmas[0], sigmas[0])
        z = phi(coords, z_prev, d, sigmas[0], sigmas[1])
        if callback is not None:
            callback(Step(0, n, z, eps.last_denoised, sigmas[0], sigmas[1], z_prev))
    else:
        z = z_next.to(state_dtype)
    for i in range(1, n):
        eps.last_denoised = None
        d = eps(z, sigmas[i], sigmas[i])
        z_prev, z = z, bdia_step(coords, z_prev, z, d, sigmas, i, gamma)
        if callback is not None:
            callback(Step(i, n, z, eps.last_denoised, sigmas[i], sigmas[i + 1], z_prev))
    return z, z_prev


def bdia_invert(denoiser: Denoiser, z0: Tensor, sigmas: Tensor, gamma: float = DEFAULT_GAMMA,
                state_dtype: torch.dtype = torch.float64, model_dtype: Optional[torch.dtype] = None,
                callback: Optional[Callback] = None, coords: Coordinates = VP) -> tuple[Tensor, Tensor]:
    """The clean latent z0 (at ``edict.end_sigma``) walked back up the descending ``sigmas``: returns the pair
    (z at sigmas[0], z at sigmas[1]) that ``bdia_sample(…, z_next=…)`` takes back to z0 exactly."""
    sigmas = prepare(sigmas, gamma, state_dtype, "BDIA inversion", invert=True)
    warning = check_growth(gamma, sigmas.numel() - 1, "BDIA inversion")
    if warning:
        log.warning(warning)
    eps = EpsFromDenoiser(denoiser, model_dtype, coords)
    n = sigmas.numel() - 1
    z_next = z0.to(state_dtype)
    s_end, s_up = sigmas[n], sigmas[n - 1]
    if s_up == s_end:  # the official list's repeated last level: an identity step
        z = z_next
    else:  # DDIM inversion: ε̂ at the current latent and the next level
        z = phi(coords, z_next, eps(z_next, s_up, s_up), edict.end_sigma(sigmas), s_up)
    if callback is not None:
        callback(Step(0, n, z, eps.last_denoised, s_end, s_up, z_next))
    for k, i in enumerate(range(n - 1, 0, -1), start=1):
        eps.last_denoised = None
        d = eps(z, sigmas[i], sigmas[i])
        z, z_next = bdia_step_inverse(coords, z, z_next, d, sigmas, i, gamma), z
        if callback is not None:
            callback(Step(k, n, z, eps.last_denoised, sigmas[i], sigmas[i - 1], z_next))
    return z, z_next
