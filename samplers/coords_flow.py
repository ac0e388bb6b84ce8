"""The one place where ComfyUI's flow-matching (CONST) coordinates live: SD3, SD3.5, Flux and their kin.

ComfyUI's CONST model sampling (comfy/model_sampling.py) puts a clean latent x0 and noise ε on a straight line,

    x_σ = (1 − σ)·x0 + σ·ε,        σ ∈ [0, 1]   (``noise_scaling``; the model input is x_σ itself),

and the network predicts the velocity v = dx/dσ = ε − x0, from which the wrapper's denoised output is
D(x, σ) = x − σ·v (``calculate_denoised``). Hence, for σ > 0,

    v̂ = (x − D(x, σ)) / σ,     x̂0 = x − σ·v̂,     ε̂ = x + (1 − σ)·v̂.

ComfyUI's ``euler`` sampler on such a model takes x_{σ'} = x_σ + (σ' − σ)·v̂(x_σ, σ): the form of the σ-space DDIM
step (``samplers.ddim.ddim_step``) with the velocity in place of ε̂ and no VP rescaling (the model input is x itself).
Inverting it towards larger σ needs the velocity at the target, which is unknown; as DDIM inversion does, take it at
the current point and the next level:

    x_{σ'} = x_σ + (σ' − σ)·v̂(x_σ, σ')        (exact when v does not depend on x, e.g. a perfect straight flow)

ComfyUI divides a sampled latent by (1 − σ_last) (``inverse_noise_scaling``): a chain that ends at σ = 1 (pure
noise) would be divided by zero, so the pack's flow inverters stop below σ = 1 or hand the latent over unscaled.
Pure torch.
"""
from __future__ import annotations

from torch import Tensor


def flow_point(x0: Tensor, eps: Tensor, sigma) -> Tensor:
    """x_σ = (1 − σ)·x0 + σ·ε."""
    return (1.0 - sigma) * x0 + sigma * eps


def velocity_from_denoised(x: Tensor, denoised: Tensor, sigma) -> Tensor:
    """v̂ = (x − D(x, σ)) / σ (σ > 0)."""
    return (x - denoised) / sigma


def x0_from_velocity(x: Tensor, v: Tensor, sigma) -> Tensor:
    """x̂0 = x − σ·v̂."""
    return x - sigma * v


def eps_from_velocity(x: Tensor, v: Tensor, sigma) -> Tensor:
    """ε̂ = x + (1 − σ)·v̂."""
    return x + (1.0 - sigma) * v


def euler_step(x: Tensor, v: Tensor, sigma, sigma_next) -> Tensor:
    """x_{σ'} = x_σ + (σ' − σ)·v̂: ComfyUI's euler step on a flow model, and its inversion's update."""
    return x + (sigma_next - sigma) * v


def check_flow_sigmas(sigmas: Tensor, who: str) -> None:
    """A flow schedule lies in [0, 1] (CONST: σ is the fraction of noise); refuse others by name."""
    if sigmas.numel() and (float(sigmas.min()) < 0 or float(sigmas.max()) > 1):
        raise ValueError(f"{who}: a flow model's SIGMAS lie in [0, 1] (the fraction of noise), got "
                         f"{float(sigmas.min()):.4g} … {float(sigmas.max()):.4g}; use the model's own scheduler "
                         f"(BasicScheduler on this MODEL)")
