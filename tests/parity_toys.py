"""Seeded float64 toy models and plumbing shared by the parity tests (tests/unit/parity): the toys stand in for the
U-Net, and none of this is a transcription of official code (each test keeps its own).

- ``AB``, ``SIGMA_TABLE``, ``EpsToyUNet``, ``comfy_denoiser``, ``rand``: an ε-model on SD's scaled-linear ᾱ and
  ComfyUI's σ-space view of it under CFG (the DDIM and EDICT parity tests).
- ``AttnToyUNet``, ``rel``: a U-Net-like ε(z, t; context) with cross-attention and an attn2 patch point (the null-text
  and StyleDiffusion parity tests).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

F64 = torch.float64


# --- SD's ᾱ schedule and ComfyUI's σ table -------------------------------------------------------------------------

def scaled_linear_alphas_cumprod() -> torch.Tensor:
    """β = linspace(sqrt(0.00085), sqrt(0.012), 1000)², ᾱ = cumprod(1 − β) (SD's scheduler config), in numpy float64
    as the schedulers compute it."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return torch.from_numpy(np.cumprod(1.0 - betas, axis=0))


AB = scaled_linear_alphas_cumprod()
SIGMA_TABLE = ((1 - AB) / AB) ** 0.5  # ComfyUI ModelSamplingDiscrete._register_schedule, kept in float64


# --- the toy ε-model and ComfyUI's view of it ------------------------------------------------------------------------

class EpsToyUNet:
    """unet(z, t, c) = sqrt(1 − ᾱ_t)·z + 0.3·conv3×3(tanh(conv3×3(z) + W_t·[sin, cos](t·f) + e_c)): the ideal ε of
    unit-Gaussian data plus a seeded non-linear, timestep- and prompt-dependent part (keeps latents at the scale of a
    real model's, |z| ~ 1–4); float64. c indexes ``n_cond`` prompt embeddings, 0 the null prompt."""

    def __init__(self, seed=0, ch=4, hidden=16, n_cond=2):
        g = torch.Generator().manual_seed(seed)

        def r(*shape, scale=1.0):
            return torch.randn(*shape, generator=g, dtype=F64) * scale
        self.w1, self.w2 = r(hidden, ch, 3, 3, scale=0.25), r(ch, hidden, 3, 3, scale=0.25)
        self.wt, self.e = r(hidden, 8, scale=0.5), r(n_cond, hidden, scale=0.5)
        self.freqs = torch.exp(-math.log(1000.0) * torch.arange(4, dtype=F64) / 4)

    def __call__(self, z, t, c):
        tf = float(t) * self.freqs
        emb = self.wt @ torch.cat([tf.sin(), tf.cos()]) + self.e[c]
        h = F.conv2d(z, self.w1, padding=1) + emb[None, :, None, None]
        return (1 - AB[int(t)]) ** 0.5 * z + 0.3 * F.conv2d(torch.tanh(h), self.w2, padding=1)


def comfy_denoiser(unet, guidance, cond=1, sigma_table=SIGMA_TABLE):
    """A ComfyUI ε-model (EPS, ModelSamplingDiscrete) under CFG as the pack's samplers see it: D(x, σ) = D_u +
    (D_c − D_u)·g, D_k = x − σ·ε_k(x/sqrt(σ²+1), t(σ)), t(σ) the nearest log-σ of the table; c = 0 uncond, ``cond``."""
    log_sigmas = sigma_table.log()

    def D(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=F64)
        t = int((sigma.log() - log_sigmas).abs().argmin())
        assert abs(float(sigma_table[t] - sigma)) <= 1e-12 * float(sigma), "σ off the model's table"
        z = x / (sigma ** 2 + 1) ** 0.5
        d_u, d_c = x - unet(z, t, 0) * sigma, x - unet(z, t, cond) * sigma
        return d_u + (d_c - d_u) * guidance
    return D


def rand(seed, shape=(1, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- the toy attention U-Net -----------------------------------------------------------------------------------------

def rel(a, b) -> float:
    """The relative difference max|a − b| / max|b|, in float64."""
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return float((a - b).abs().max() / b.abs().max())


class AttnToyUNet:
    """ε(z, t; context, value): conv → tanh (+ timestep) → cross-attention at full resolution → two cross-attentions
    at half resolution → conv; ``heads`` heads each, ``f`` channels, context width ``d``. ``value`` (default: context)
    is what the value projections read; ``patch`` is an attn2 patch called as ComfyUI calls it, (n, context, value,
    extra_options) -> (n, context, value). ``in_scale`` and ``attn_out_scale`` scale the seeded input conv and the
    attention output projections (each test sets the sizes of its losses with them). Returns ε, or with ``maps``
    (ε, [the half-resolution layers' probabilities [B, heads, N, L]]). ``pool_twice``: the skip around the
    half-resolution layers subtracts the input pooled again rather than the pooled tensor itself: the same values, but
    autograd sums the gradient in another order (1 ulp apart), kept so that each test's measured figures stay as they
    were."""

    def __init__(self, seed=0, c=4, f=8, d=8, heads=2, in_scale=0.05, attn_out_scale=0.05, maps=False,
                 pool_twice=False):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s, k=1.0: torch.randn(*s, generator=g, dtype=F64) * k  # noqa: E731
        self.heads, self.maps, self.pool_twice = heads, maps, pool_twice
        self.w_in, self.t_emb, self.w_out = r(f, c, 3, 3, k=in_scale), r(f, k=0.03), r(c, f, 3, 3, k=0.009)
        self.layers = [dict(q=r(f, f, k=0.6), k=r(d, f, k=0.6), v=r(d, f, k=0.5), o=r(f, f, k=attn_out_scale))
                       for _ in range(3)]

    def attend(self, h, layer, context, value, patch, extra):
        b, f, hh, ww = h.shape
        n = h.flatten(2).transpose(1, 2)
        if patch is not None:
            _, context, value = patch(n, context, value, extra)
        q, k, v = n @ layer["q"], context @ layer["k"], value @ layer["v"]
        split = lambda x: x.view(b, x.shape[1], self.heads, f // self.heads).transpose(1, 2)  # noqa: E731
        p = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(f // self.heads), dim=-1)
        o = (p @ split(v)).transpose(1, 2).reshape(b, -1, f) @ layer["o"]
        return h + o.transpose(1, 2).view(b, f, hh, ww), p

    def __call__(self, z, t, context, value=None, patch=None, extra=None):
        value = context if value is None else value
        h = torch.tanh(F.conv2d(z, self.w_in, padding=1) + (float(t) / 1000.0 * self.t_emb)[None, :, None, None])
        h, _ = self.attend(h, self.layers[0], context, value, patch, extra)
        p = p0 = F.avg_pool2d(h, 2)
        maps = []
        for layer in self.layers[1:]:
            p, m = self.attend(p, layer, context, value, patch, extra)
            maps.append(m)
        h = h + F.interpolate(p - (F.avg_pool2d(h, 2) if self.pool_twice else p0), scale_factor=2, mode="nearest")
        eps = F.conv2d(torch.tanh(h), self.w_out, padding=1)
        return (eps, maps) if self.maps else eps
