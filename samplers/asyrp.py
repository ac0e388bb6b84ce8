"""The Asyrp generative process (Kwon, Jeong, Uh, ICLR 2023, eq. 6–9) in ComfyUI σ-space.

DDIM writes a step as x_{t−1} = sqrt(ᾱ_{t−1})·P_t(ε) + D_t(ε) (+ σ_t z): P_t the predicted x0, D_t the direction to
x_t. Asyrp takes P_t from the U-Net with the shifted bottleneck (ε_θ(x_t | Δh_t)) and D_t from the unshifted one, since
shifting ε in both terms nearly cancels (Theorem 1). In σ-space (x = z/sqrt(ᾱ), D(x, σ) = P_t) DDIM η = 0 is the Euler
step x' = P + σ'·(x − P)/σ, and the asymmetric step is

    x' = P_edit + σ'·(x − P_orig)/σ  =  x + (σ' − σ)·d_orig + (P_edit − P_orig),      d_orig = (x − P_orig)/σ

(the second form reduces bit-exactly to ComfyUI's ``sample_euler`` when P_edit ≡ P_orig). The process (eq. 9):

    σ ≥ σ_edit:           asymmetric step (η = 0)
    σ_edit > σ ≥ σ_boost:  plain DDIM (η = 0)
    σ < σ_boost:           DDIM with η = 1 ("quality boosting"): x' = P + σ_down·d + σ_up·z,
                           σ_up = sqrt(σ'²(σ² − σ'²)/σ²), σ_down = sqrt(σ'² − σ_up²)  (k-diffusion's ancestral step;
                           for η ≤ 1 DDIM's c1 = η·sqrt((1 − ᾱ_t/ᾱ_{t−1})(1 − ᾱ_{t−1})/(1 − ᾱ_t)) and
                           c2 = sqrt(1 − ᾱ_{t−1} − c1²), each divided by sqrt(ᾱ_{t−1}))

When σ_boost lies above σ_edit (t_boost > t_edit) the two rules overlap; as in the official code
(``diffusion_latent.py`` ``save_image``: ``eta = 1.0 if t < t_addnoise``, the shift whenever ``t >= t_edit``; and
``utils/diffusion_utils.py`` ``denoising_step``: x0_t from the shifted ε, c2·ε and c1·z from the unshifted ε and fresh
noise) such a step is both: x' = P_edit + σ_down·d_orig + σ_up·z (``asyrp_boost_step``).

Pure torch; the denoiser callables come from the ComfyUI adapter.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .steps import Callback, Step

# denoise(x, σ, edit) -> (P_orig, P_edit); P_edit is None when edit is False
PairDenoiser = Callable[[Tensor, Tensor, bool], tuple[Tensor, Optional[Tensor]]]


def asyrp_step(x: Tensor, sigma: Tensor, sigma_next: Tensor, p_orig: Tensor, p_edit: Tensor) -> Tensor:
    """x' = x + (σ' − σ)·(x − P_orig)/σ + (P_edit − P_orig)."""
    return symmetric_step(x, sigma, sigma_next, p_orig) + (p_edit - p_orig)


def symmetric_step(x: Tensor, sigma: Tensor, sigma_next: Tensor, p: Tensor) -> Tensor:
    """The plain DDIM η = 0 (Euler) step with one prediction: x' = x + (σ' − σ)·(x − P)/σ, in the operation order of
    ComfyUI's ``sample_euler`` (d = (x − P)/σ, then x + d·(σ' − σ)), so that it is bit-identical to it."""
    d = (x - p) / sigma
    return x + d * (sigma_next - sigma)


def ancestral_sigmas(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up) of a DDIM step with noise η (k-diffusion's get_ancestral_step)."""
    if float(sigma_next) == 0.0:
        return sigma_next, sigma_next
    up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - up ** 2) ** 0.5, up


def boost_step(x: Tensor, sigma: Tensor, sigma_next: Tensor, p: Tensor, noise: Tensor, eta: float = 1.0) -> Tensor:
    """DDIM with η: x' = P + σ_down·(x − P)/σ + σ_up·z."""
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    return p + down * (x - p) / sigma + up * noise


def asyrp_boost_step(x: Tensor, sigma: Tensor, sigma_next: Tensor, p_orig: Tensor, p_edit: Tensor, noise: Tensor,
                     eta: float = 1.0) -> Tensor:
    """An edit step inside the boost interval: x' = P_edit + σ_down·(x − P_orig)/σ + σ_up·z (the official
    ``denoising_step`` with ``index`` set and η > 0)."""
    return boost_step(x, sigma, sigma_next, p_orig, noise, eta) + (p_edit - p_orig)


def asyrp_sample(denoise: PairDenoiser, x: Tensor, sigmas: Tensor, edit_at: Callable[[float], bool],
                 sigma_boost: float = 0.0, eta_boost: float = 1.0,
                 noise: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
                 callback: Optional[Callback] = None) -> Tensor:
    """Run eq. 9 along descending ``sigmas``. ``edit_at(σ)`` says whether a step is in an edit window (two
    predictions); below ``sigma_boost`` steps are stochastic with ``noise(σ, σ')`` (required then), edit steps
    included (the official rule where the intervals overlap; see the module docstring)."""
    for i in range(sigmas.numel() - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        edit = edit_at(float(s))
        p_orig, p_edit = denoise(x, s, edit)
        edited = edit and p_edit is not None
        if float(s) < sigma_boost and float(s_next) > 0 and eta_boost > 0:
            if noise is None:
                raise ValueError("Asyrp: quality boosting needs a noise source (a seed).")
            z = noise(s, s_next)
            x = (asyrp_boost_step(x, s, s_next, p_orig, p_edit, z, eta_boost) if edited
                 else boost_step(x, s, s_next, p_orig, z, eta_boost))
        elif edited:
            x = asyrp_step(x, s, s_next, p_orig, p_edit)
        else:
            x = symmetric_step(x, s, s_next, p_orig)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, p_orig if p_edit is None else p_edit, s, s_next))
    return x


def first_t_reaching(ts: list[int], curve: list[float], threshold: float) -> int:
    """The first timestep, in ascending t, whose dataset-mean distance reaches ``threshold`` (the official code's rule
    for reading t_edit / t_boost off the LPIPS curves); the largest t when none does."""
    pairs = sorted(zip(ts, curve))
    return next((t for t, v in pairs if v >= threshold), pairs[-1][0])


def estimate_intervals(ts: list[int], dist_p: list[float], dist_x: list[float], edit_threshold: float = 0.33,
                       boost_threshold: float = 1.2, text_cosine: float = 1.0) -> tuple[int, int]:
    """(t_edit, t_boost) from mean perceptual distances along an inversion (paper Sec. 4.1–4.2, App. G):
    t_edit is where LPIPS(x, P_t) reaches edit_threshold·cos(E_T(y_src), E_T(y_trg)) (longer windows for bigger
    edits), t_boost where the quality deficiency LPIPS(x, x_t) reaches boost_threshold; t_boost ≤ t_edit."""
    t_edit = first_t_reaching(ts, dist_p, edit_threshold * text_cosine)
    return t_edit, min(first_t_reaching(ts, dist_x, boost_threshold), t_edit)
