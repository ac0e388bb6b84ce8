"""Tiny deterministic ε-networks and σ-space denoisers shared by the unit tests (pure torch, float64)."""
from __future__ import annotations

import torch

from invedit.samplers import coords

F64 = torch.float64


def sd15_alphas_cumprod() -> torch.Tensor:
    """ᾱ_t of the SD scaled-linear schedule, t = 0 … 999."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=F64) ** 2
    return torch.cumprod(1 - betas, 0)


def sd15_sigmas() -> torch.Tensor:
    return coords.sigma_from_alpha_bar(sd15_alphas_cumprod())


class TinyEps(torch.nn.Module):
    """A nonlinear ε-prediction net ε(z, t) (conv + tanh, timestep-dependent), computed in the input's dtype."""

    def __init__(self, seed=0, c=4, scale=0.3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(16, c, 3, 3, generator=g, dtype=F64) * scale
        self.w2 = torch.randn(c, 16, 3, 3, generator=g, dtype=F64) * scale
        self.tw = torch.randn(16, generator=g, dtype=F64)

    def forward(self, z, t):
        w1, w2, tw = (w.to(z.dtype) for w in (self.w1, self.w2, self.tw))
        h = torch.nn.functional.conv2d(z, w1, padding=1) + (tw * float(t) / 1000.0)[None, :, None, None]
        return torch.nn.functional.conv2d(torch.tanh(h), w2, padding=1)


class CFGEps:
    """ε = ε_u + g·(ε_c − ε_u) from two tiny nets: the classifier-free-guidance combination the models return."""

    def __init__(self, g=5.0, seeds=(11, 12), out=0.05):
        self.u, self.c, self.g, self.out = TinyEps(seeds[0]), TinyEps(seeds[1]), g, out

    def __call__(self, z, t):  # out = 0.05: std(ε) ≈ 1 at g = 5, as for a trained model
        eu = self.u(z, t)
        return self.out * (eu + self.g * (self.c(z, t) - eu))


def sigma_denoiser(eps_model, alphas_cumprod=None):
    """ComfyUI-style D(x, σ) = x − σ·ε(x/sqrt(1+σ²), t(σ)), t(σ) the nearest training timestep (as ComfyUI's
    ModelSamplingDiscrete.timestep), for an ε-model ε(z, t)."""
    ab = sd15_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
    log_table = coords.sigma_from_alpha_bar(ab).log()

    def D(x, sigma):
        t = int((log_table - torch.as_tensor(sigma, dtype=F64).log()).abs().argmin())
        return x - sigma * eps_model(coords.x_to_vp(x, sigma), t)
    return D


def flow_denoiser(velocity_model, shift=3.0):
    """ComfyUI-style D(x, σ) = x − σ·v(x, 1000σ) of a flow (CONST) model predicting the velocity v(x, t), and the
    model's shifted ``simple`` schedule σ(u) = s·u/(1 + (s − 1)·u) (ModelSamplingSD3's ``time_snr_shift``)."""
    def D(x, sigma):
        return x - sigma * velocity_model(x, 1000.0 * float(sigma))
    return D


def flow_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """SD3's schedule: σ = s·u/(1 + (s − 1)·u) at u = 1, 1 − 1/steps, …, 0 (from 1, pure noise, to 0)."""
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=F64)
    return shift * u / (1 + (shift - 1) * u)
