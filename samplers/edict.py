"""EDICT: exactly invertible sampling with coupled x/y latents (Wallace, Gokul, Naik, CVPR 2023), in ComfyUI σ-space.

DDIM inversion is approximate because an inverse step needs ε at the unknown next state. EDICT keeps two copies
(x, y) of the VP latent z and advances each by a DDIM step whose ε is computed on the *other* copy, like an affine
coupling layer, then mixes them with weight p. Every sub-step is affine in the copy it updates, so the whole chain
(x_T, y_T) <-> (x_0, y_0) inverts in closed form, for any model, conditioning and CFG scale.

For a step between noise levels σ -> σ' (ᾱ = 1/(1+σ²)) the DDIM (η = 0) update of a VP latent is z' = a·z + b·ε with

    a = sqrt(ᾱ'/ᾱ) = sqrt(1+σ²)/sqrt(1+σ'²),      b = sqrt(1−ᾱ') − sqrt(ᾱ'(1−ᾱ)/ᾱ) = (σ' − σ)/sqrt(1+σ'²)

(σ' = 0: a = sqrt(1+σ²), b = −σ; σ' = σ: a = 1, b = 0, the official schedule's final identity step). One EDICT step
(paper eqs. 9–12; ε = the CFG-combined prediction, both sub-steps at the timestep of σ):

    x_inter = a·x + b·ε(y, σ)                   y_inter = a·y + b·ε(x_inter, σ)
    x'      = p·x_inter + (1−p)·y_inter         y'      = p·y_inter + (1−p)·x'

and its inverse, in this order:

    y_inter = (y' − (1−p)·x')/p                 x_inter = (x' − (1−p)·y_inter)/p
    y       = (y_inter − b·ε(x_inter, σ))/a     x       = (x_inter − b·ε(y, σ))/a

Leapfrog (the official code's default, in neither paper's equations): on odd step indices i of the SIGMAS list the
roles of x and y swap in the two sub-steps (y first, using ε(x)); the mixing layer is never swapped. The inverse
uses the parity of the *forward* index, so odd and even step counts both invert exactly.

Input scaling: x_inter is already at level σ' when the second sub-step feeds it to the model at σ. The official code
gives the UNet the VP latent itself; in ComfyUI's σ-space that is the input z·sqrt(1+σ²) at σ
(``official_input_scaling=True``). With False the input is z·sqrt(1+σ'²) (x_inter's own σ-space value). Either is
exactly invertible, but only True follows the reference implementation: False moves a 50-step chain by ~6e-2
(sampling) / ~1e-1 (inversion) of its size on the parity test's toy model (tests/unit/parity/test_edict_parity.py).

Precision: the state and all affine arithmetic run in ``state_dtype`` (float64 by default); the model is called in
``model_dtype`` (what ComfyUI gives latents, usually float32; the network itself may run in fp16/bf16). Generation
contracts x − y by p² per step, inversion expands it by p^-2 per step (p^-100 ≈ 1.4e3 at p = 0.93, T = 50), so a
half-precision state cannot be inverted and is refused.

Coordinates: the functions below take and return VP latents z. ComfyUI's σ-space value is x = z·sqrt(1+σ²) at the
first level; at the end of the chain the level is σ_last, except that a repeated final σ (the official 980…0
schedule, whose last step is a mixing-only identity step) marks the clean latent, as the reference code treats
ᾱ_0 (see ``end_sigma``).

Flow models (CONST: SD3, Flux; ``coords=FLOW``): the sampler step is the flow Euler step x' = x + (σ' − σ)·v̂ with
v̂ = (x − D(x, σ))/σ (``samplers.coords_flow``), affine in x as DDIM's is, so the same coupled step, mixing, leapfrog
and inverse apply with a = 1, b = σ' − σ and the velocity in place of ε̂. The state is ComfyUI's x itself (the
model input needs no rescaling, so ``official_input_scaling`` changes nothing there); a chain may start at σ = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .coords import vp_scale
from .steps import Callback, Step

Denoiser = Callable[[Tensor, Tensor], Tensor]
# The callback gets Step(i, total, x, denoised, sigma, sigma_next, y) after forward step i (or after undoing it,
# during inversion): the new VP pair and the x0 estimate of that step's last model call (None when it made none).

DEFAULT_P = 0.93
STATE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def check_state_dtype(dtype: torch.dtype, who: str = "EDICT") -> None:
    if dtype not in STATE_DTYPES.values():
        raise ValueError(f"{who}: state dtype {dtype} cannot be inverted (half precision loses the inversion: errors "
                         f"of order 1–100 after 50 steps); use float64 (exact) or float32 (approximate).")


def check_p(p: float, who: str = "EDICT") -> None:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"{who}: the mixing weight p must be in (0, 1], got {p}; 0.93 is the paper's default.")


# The inverse mixing (``unmix``) has eigenvalues 1 and p⁻² (the mixing's matrix [[p, 1−p], [p(1−p), p + (1−p)²]] has
# determinant p²), so an inversion multiplies the pair's difference x − y by p⁻² a step: after T steps its values are
# about c·p^(−2T) (c ≈ 1e−4 on the shapes world at p 0.93: max |x| 282 at 100 steps, 2.6e8 at 200, 2.8e11 at 250;
# NaN at 400, where they pass 1e19 and the model's float32 normalisations overflow squaring them). The regeneration
# mixes forward and shrinks them back, but the model must evaluate them on the way: an inversion whose amplification
# p^(−2T) passes MAX_AMPLIFICATION is refused before its first step (at p 0.93: 253 steps; the paper's 50 amplify 1.4e3).
MAX_AMPLIFICATION = 1e16


def inversion_amplification(p: float, steps: int) -> float:
    """p^(−2·steps): how much an EDICT inversion of ``steps`` steps amplifies the difference of its pair."""
    return math.inf if p <= 0 else p ** (-2.0 * steps)


def max_inversion_steps(p: float) -> int:
    """The most steps an inversion at mixing weight ``p`` may take (amplification ≤ MAX_AMPLIFICATION)."""
    return 10 ** 9 if p >= 1.0 else int(math.log(MAX_AMPLIFICATION) / (-2.0 * math.log(p)))


def check_inversion_steps(steps: int, p: float, who: str = "EDICT inversion") -> None:
    """Refuse, before any model call, an inversion whose amplification p^(−2T) no float32 model survives."""
    if steps > max_inversion_steps(p):
        need = math.ceil(MAX_AMPLIFICATION ** (-1.0 / (2 * steps)) * 1000) / 1000  # the p that allows ``steps``
        best = need if need < 1.0 else None
        raise ValueError(f"{who}: {steps} steps at mix_p {p}: EDICT's inverse mixing multiplies the difference of its "
                         f"pair by p⁻² = {p ** -2:.4g} a step, {inversion_amplification(p, steps):.1e} over the "
                         f"chain, which drives the latents the model is evaluated on past what its float32 arithmetic "
                         f"carries (NaN after minutes of work); use at most {max_inversion_steps(p)} steps at mix_p {p}"
                         + (f", or raise mix_p to {best} or more for {steps} steps" if best else "")
                         + ".")


def check_edict_schedule(sigmas: Tensor, who: str = "EDICT") -> None:
    """Descending noise levels; only the final pair may be equal (the official identity step)."""
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"{who}: SIGMAS must hold at least two values (one step), got shape {tuple(sigmas.shape)}.")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError(f"{who}: SIGMAS must be finite and non-negative, got {sigmas.tolist()}.")
    d = sigmas[1:] - sigmas[:-1]
    if not ((d[:-1] < 0).all() and d[-1] <= 0) or (sigmas.numel() == 2 and d[0] == 0):
        raise ValueError(f"{who}: SIGMAS must be strictly descending (only the last two may be equal, as in the "
                         f"official schedule); got {[round(v, 4) for v in sigmas.tolist()]}. Use a scheduler's list "
                         f"as it is, not a flipped one: the inversion walks the list the sampling walks.")


def end_sigma(sigmas: Tensor) -> Tensor:
    """The level of the chain's clean end: 0 when the list ends in a repeated σ (official schedule), else σ_last."""
    return torch.zeros_like(sigmas[-1]) if sigmas[-1] == sigmas[-2] else sigmas[-1]


def step_coefficients(sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) of the DDIM update z' = a·z + b·ε from level σ to σ' (see the module docstring)."""
    s_next = vp_scale(sigma_next)
    return vp_scale(sigma) / s_next, (sigma_next - sigma) / s_next


def flow_step_coefficients(sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) = (1, σ' − σ) of the flow Euler step x' = a·x + b·v̂ (``coords_flow.euler_step``)."""
    return torch.ones_like(sigma), sigma_next - sigma


def unit_scale(sigma: Tensor) -> Tensor:
    return torch.ones_like(sigma)


@dataclass(frozen=True)
class Coordinates:
    """What EDICT's state is for a model family: ``scale(σ)`` takes the state to ComfyUI's σ-space x (the model
    input), ``coefficients(σ, σ')`` gives (a, b) of the sampler step state' = a·state + b·d̂, d̂ = (x − D)/σ."""
    name: str
    scale: Callable[[Tensor], Tensor]
    coefficients: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

    def to_state(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x / self.scale(sigma)

    def to_comfy(self, z: Tensor, sigma: Tensor) -> Tensor:
        return z * self.scale(sigma)


VP = Coordinates("vp", vp_scale, step_coefficients)             # ε/v-prediction: z = x/sqrt(1+σ²), the DDIM step
FLOW = Coordinates("flow", unit_scale, flow_step_coefficients)  # CONST: the state is x, the flow Euler step


def mix(x: Tensor, y: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Mixing layer: x' = p·x + (1−p)·y, then y' = p·y + (1−p)·x' (the new x)."""
    x_new = p * x + (1 - p) * y
    return x_new, p * y + (1 - p) * x_new


def unmix(x: Tensor, y: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Inverse of ``mix``: y = (y' − (1−p)·x')/p, then x = (x' − (1−p)·y)/p."""
    y_old = (y - (1 - p) * x) / p
    return (x - (1 - p) * y_old) / p, y_old


class EpsFromDenoiser:
    """ε̂(z, σ) from a σ-space denoiser D(x, σ) -> x0: the model sees x = z·sqrt(1 + σ_in²) (``coords.scale``; x = z
    for flow models) cast to ``model_dtype`` at level σ, and ε̂ = (x − D(x, σ))/σ (the velocity v̂ for flow models) is
    returned in the state dtype. It depends on z alone, deterministically, which is all exact invertibility needs.
    Keeps the last x0 estimate for previews."""

    def __init__(self, denoiser: Denoiser, model_dtype: Optional[torch.dtype], coords: Coordinates = VP):
        self.denoiser, self.model_dtype, self.coords, self.last_denoised = denoiser, model_dtype, coords, None

    def __call__(self, z: Tensor, sigma: Tensor, sigma_in: Tensor) -> Tensor:
        x = self.coords.to_comfy(z, sigma_in)
        x_model = x if self.model_dtype is None else x.to(self.model_dtype)
        d = self.denoiser(x_model, sigma.to(x_model.dtype))
        self.last_denoised = d
        # ε̂ from the state-precision x, not from its cast: with the cast, the inverse of a step to σ = 0 rebuilds
        # model inputs as sums of float32 numbers, which land on float32 rounding ties that state-precision noise
        # then breaks differently from the forward pass (measured: 1 ulp input flips, 4e-7 round-trip error).
        return (x - d.to(z.dtype)) / sigma


def second_input_sigma(sigma: Tensor, sigma_next: Tensor, official_input_scaling: bool) -> Tensor:
    """The level at which the second sub-step's model input is scaled (see the module docstring)."""
    return sigma if official_input_scaling else sigma_next


def edict_step(eps: EpsFromDenoiser, x: Tensor, y: Tensor, sigma: Tensor, sigma_next: Tensor, p: float, swap: bool,
               official_input_scaling: bool = True) -> tuple[Tensor, Tensor]:
    """One denoising step σ -> σ' of the pair (x, y); ``swap`` = leapfrog on an odd step (y is updated first)."""
    if sigma_next != sigma:
        a, b = eps.coords.coefficients(sigma, sigma_next)
        u, v = (y, x) if swap else (x, y)  # u is updated first, from ε(v); then v from ε(u_inter)
        u = a * u + b * eps(v, sigma, sigma)
        v = a * v + b * eps(u, sigma, second_input_sigma(sigma, sigma_next, official_input_scaling))
        x, y = (v, u) if swap else (u, v)
    return mix(x, y, p)


def edict_step_inverse(eps: EpsFromDenoiser, x: Tensor, y: Tensor, sigma: Tensor, sigma_next: Tensor, p: float, swap: bool,
                       official_input_scaling: bool = True) -> tuple[Tensor, Tensor]:
    """Exact inverse of ``edict_step``: from the pair at σ' back to σ (same ``swap`` as the forward step)."""
    x, y = unmix(x, y, p)
    if sigma_next != sigma:
        a, b = eps.coords.coefficients(sigma, sigma_next)
        u, v = (y, x) if swap else (x, y)
        v = (v - b * eps(u, sigma, second_input_sigma(sigma, sigma_next, official_input_scaling))) / a
        u = (u - b * eps(v, sigma, sigma)) / a
        x, y = (v, u) if swap else (u, v)
    return x, y


def prepare_sigmas(sigmas: Tensor, p: float, state_dtype: torch.dtype, who: str) -> Tensor:
    """Checked SIGMAS, p and state dtype; the SIGMAS in the state dtype."""
    check_edict_schedule(sigmas, who)
    check_p(p, who)
    check_state_dtype(state_dtype, who)
    return sigmas.to(state_dtype)


def edict_sample(denoiser: Denoiser, x: Tensor, y: Tensor, sigmas: Tensor, p: float = DEFAULT_P,
                 leapfrog: bool = True, official_input_scaling: bool = True,
                 state_dtype: torch.dtype = torch.float64, model_dtype: Optional[torch.dtype] = None,
                 callback: Optional[Callback] = None, coords: Coordinates = VP) -> tuple[Tensor, Tensor]:
    """Denoise the state pair (x, y) (VP latents; x itself with ``coords=FLOW``) at sigmas[0] along the descending
    ``sigmas``; returns the pair at ``end_sigma``.

    Generation starts from x = y = the initial noise; regeneration from an inverted pair."""
    sigmas = prepare_sigmas(sigmas, p, state_dtype, "EDICT sampling")
    eps = EpsFromDenoiser(denoiser, model_dtype, coords)
    x, y = x.to(state_dtype), y.to(state_dtype)
    for i in range(sigmas.numel() - 1):
        eps.last_denoised = None
        x, y = edict_step(eps, x, y, sigmas[i], sigmas[i + 1], p, leapfrog and i % 2 == 1, official_input_scaling)
        if callback is not None:
            callback(Step(i, sigmas.numel() - 1, x, eps.last_denoised, sigmas[i], sigmas[i + 1], y))
    return x, y


def edict_invert(denoiser: Denoiser, x: Tensor, y: Tensor, sigmas: Tensor, p: float = DEFAULT_P,
                 leapfrog: bool = True, official_input_scaling: bool = True,
                 state_dtype: torch.dtype = torch.float64, model_dtype: Optional[torch.dtype] = None,
                 callback: Optional[Callback] = None, coords: Coordinates = VP) -> tuple[Tensor, Tensor]:
    """Exact inverse of ``edict_sample`` with the same arguments: from the clean pair (x_0 = y_0 = the image latent)
    back to the pair at sigmas[0]. ``sigmas`` is the descending list the regeneration will use."""
    sigmas = prepare_sigmas(sigmas, p, state_dtype, "EDICT inversion")
    check_inversion_steps(sigmas.numel() - 1, p)
    eps = EpsFromDenoiser(denoiser, model_dtype, coords)
    x, y = x.to(state_dtype), y.to(state_dtype)
    n = sigmas.numel() - 1
    for k, i in enumerate(reversed(range(n))):
        eps.last_denoised = None
        x, y = edict_step_inverse(eps, x, y, sigmas[i], sigmas[i + 1], p, leapfrog and i % 2 == 1,
                                  official_input_scaling)
        if callback is not None:
            callback(Step(k, n, x, eps.last_denoised, sigmas[i + 1], sigmas[i], y))
    return x, y


def used_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` a strength keeps, counted from the clean end: int(steps·strength) (the reference code's
    ``steps − t_limit``)."""
    return int(steps * strength)


def last_steps(sigmas: Tensor, strength: float) -> Tensor:
    """The last ``used_steps`` steps of a SIGMAS list (an edit regenerates from part-way)."""
    used = used_steps(sigmas.numel() - 1, strength)
    if used < 1:
        raise ValueError(f"strength {strength} leaves no step of {sigmas.numel() - 1}; raise the strength or the "
                         f"steps.")
    return sigmas[sigmas.numel() - 1 - used:]


def official_timesteps(steps: int, train_timesteps: int = 1000, strength: float = 1.0) -> list[int]:
    """The reference code's DDIM timesteps (``set_alpha_to_one=False``, offset 0): 980, 960, …, 20, 0 for 50 steps,
    of which the last int(steps·strength) are used (its ``t_limit = steps − int(steps·strength)``)."""
    if steps < 1:
        raise ValueError("EDICT: steps must be >= 1.")
    stride = train_timesteps // steps
    ts = [i * stride for i in reversed(range(steps))]
    return ts[steps - used_steps(steps, strength):]


def reference_code_timesteps(steps: int, train_timesteps: int = 1000) -> list[int]:
    """The timesteps the EDICT reference code itself runs: ``arange(0, T, T // steps)`` descending. These are
    ``official_timesteps`` only when ``steps`` divides T; otherwise there is one more (30 steps: 31, from 990), and
    each of its steps lands on ᾱ interpolated at the float t − T/steps (with swapped weights), ~0.67 timestep away
    from where the next step starts. The pack keeps ``steps`` steps on the T // steps grid, each landing on the next
    level (a deliberate difference: 1.6e-2 relative on the parity test's toy at 30 steps; none for divisors of T)."""
    return list(reversed(range(0, train_timesteps, train_timesteps // steps)))


def official_sigmas(model_sigmas: Tensor, steps: int = 50, strength: float = 1.0) -> Tensor:
    """SIGMAS for the reference schedule: σ(t) for ``official_timesteps`` and then σ(0) once more, so that the last
    step is the reference code's identity step (ᾱ_prev of t = 0 is ᾱ_0) that only mixes. ``model_sigmas`` is the
    model's table σ(t), t = 0 … T−1 (ComfyUI's ``model_sampling.sigmas``)."""
    ts = official_timesteps(steps, model_sigmas.numel(), strength)
    if not ts:
        raise ValueError(f"EDICT: strength {strength} leaves no step of {steps}; raise the strength or the steps.")
    return torch.cat([model_sigmas[ts], model_sigmas[:1]])
