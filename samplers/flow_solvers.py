"""Second-order solvers of the rectified-flow ODE dx/dσ = v(x, σ) for inversion and editing on flow models (CONST:
SD3, Flux), in ComfyUI's σ-space (``samplers.coords_flow``: x_σ = (1 − σ)·x0 + σ·ε, v̂ = (x − D(x, σ))/σ). Each
walks a list of levels in the order given: descending samples, ascending inverts (the same update, h = σ' − σ > 0).

RF-Solver (Wang et al., "Taming Rectified Flow for Inversion and Editing", 2024; official ``denoise`` in
wangjiangshan0725/RF-Solver-Edit, FLUX_Image_Edit/src/flux/sampling.py): the second-order Taylor expansion of the
ODE with the velocity's derivative estimated from a half step, h = σ' − σ,

    v = v̂(x, σ),  x_mid = x + (h/2)·v,  v_mid = v̂(x_mid, σ + h/2),  v' = (v_mid − v)/(h/2)
    x_{σ'} = x + h·v + ½·h²·v'                                               (2 model calls a step)

(algebraically the explicit midpoint rule x + h·v_mid; computed in the official form).

FireFlow (Deng et al., "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing", 2024; official
``denoise_fireflow`` in HolmesShuan/FireFlow-…, src/flux/sampling.py): the midpoint rule with the midpoint velocity
of the previous step reused as the next step's start velocity,

    v = v_mid of the previous step (v̂(x, σ) at the first step),  x_mid = x + (h/2)·v,
    v_mid = v̂(x_mid, σ + h/2),  x_{σ'} = x + h·v_mid                       (1 model call a step, + 1)

The official code calls the network at t = 0 when an inversion starts from the clean image; ComfyUI's model wrapper
returns D(x, σ) = x − σ·v, from which v cannot be read at σ = 0, so the pack reads it at ``SIGMA_FLOOR`` = 1e-4 (the
level ComfyUI's FlipSigmas puts in place of 0): a difference the parity test measures.
Neither solver is exact: their inversions drift less than the Euler (DDIM) inversion's, at 2× (RF-Solver) or ~1×
(FireFlow) its model calls. Pure torch.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .coords_flow import velocity_from_denoised
from .steps import Callback, Step

Denoiser = Callable[[Tensor, Tensor], Tensor]
SIGMA_FLOOR = 1e-4
SOLVERS = ("rf_solver", "fireflow")
CALLS = {"rf_solver": lambda n: 2 * n, "fireflow": lambda n: n + 1}  # model calls for n steps


class Velocity:
    """v̂(x, σ) = (x − D(x, σ))/σ with σ read at least at SIGMA_FLOOR; keeps the last x0 estimate for previews."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser, self.last_denoised = denoiser, None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = sigma.clamp(min=SIGMA_FLOOR)
        d = self.denoiser(x, s)
        self.last_denoised = d
        return velocity_from_denoised(x, d, s)


def rf_solver_step(vel: Velocity, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """x_{σ'} = x + h·v + ½·h²·(v_mid − v)/(h/2), v at (x, σ), v_mid at the half step."""
    h = sigma_next - sigma
    v = vel(x, sigma)
    v_mid = vel(x + h / 2 * v, sigma + h / 2)
    first_order = (v_mid - v) / (h / 2)
    return x + h * v + 0.5 * h ** 2 * first_order


def fireflow_step(vel: Velocity, x: Tensor, sigma: Tensor, sigma_next: Tensor,
                  v: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(x_{σ'} = x + h·v_mid, v_mid): ``v`` the previous step's midpoint velocity (None: v̂(x, σ))."""
    h = sigma_next - sigma
    if v is None:
        v = vel(x, sigma)
    v_mid = vel(x + h / 2 * v, sigma + h / 2)
    return x + h * v_mid, v_mid


def solve(solver: str, denoiser: Denoiser, x: Tensor, sigmas: Tensor,
          callback: Optional[Callback] = None) -> Tensor:
    """Walk ``sigmas`` in the given order (descending: sampling; ascending: inversion) with ``solver``."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown flow solver {solver!r}: one of {', '.join(SOLVERS)}")
    vel = Velocity(denoiser)
    v = None
    n = sigmas.numel() - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        if solver == "rf_solver":
            x = rf_solver_step(vel, x, s, s_next)
        else:
            x, v = fireflow_step(vel, x, s, s_next, v)
        if callback is not None:
            callback(Step(i, n, x, vel.last_denoised, s, s_next))
    return x
