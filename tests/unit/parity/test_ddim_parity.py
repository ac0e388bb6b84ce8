"""DDIM parity: the pack's ``samplers/ddim.py`` against independent float64 transcriptions of the reference code.

References (transcribed below in float64; the libraries themselves keep ᾱ in float32):

1. diffusers v0.39.0 (huggingface/diffusers, the version in this venv; DDIMInverseScheduler.step reads the same at
   upstream 06bb13644174125eb79f83c7692e6e034d5e737a), ``src/diffusers/schedulers/scheduling_ddim.py``:
   ``DDIMScheduler.set_timesteps`` (lines 334–382, "leading": step_ratio = 1000 // N,
   timesteps = (arange(N)·step_ratio)[::-1] + steps_offset) and ``DDIMScheduler.step`` (384–514, η = 0, ε-prediction,
   no clipping): prev_t = t − 1000 // N; ᾱ_prev = ᾱ[prev_t] if prev_t ≥ 0 else final_alpha_cumprod (1 with
   set_alpha_to_one, else ᾱ[0]); x̂0 = (z − sqrt(1−ᾱ_t)·ε)/sqrt(ᾱ_t); z' = sqrt(ᾱ_prev)·x̂0 + sqrt(1−ᾱ_prev)·ε.
   The loop is StableDiffusionPipeline's: for t in timesteps, ε = CFG(unet(z, t)), z = step(ε, t, z); with strength
   < 1 StableDiffusionImg2ImgPipeline.get_timesteps keeps timesteps[N − int(N·strength):].
2. the same release, ``scheduling_ddim_inverse.py``: ``DDIMInverseScheduler.set_timesteps`` (267–307, "leading":
   (arange(N)·step_ratio) + steps_offset, ascending) and ``step`` (309–382): prev_t = t (the target),
   t_cur = min(t − step_ratio, 999); ᾱ_cur = ᾱ[t_cur] if t_cur ≥ 0 else initial_alpha_cumprod; ᾱ_next = ᾱ[t];
   x̂0 = (z − sqrt(1−ᾱ_cur)·ε)/sqrt(ᾱ_cur); z' = sqrt(ᾱ_next)·x̂0 + sqrt(1−ᾱ_next)·ε, with ε = unet(z, t): the model
   on the current latent at the *target* timestep (pipelines/deprecated/stable_diffusion_diffedit, ``invert``, lines
   1218–1268; with strength < 1 ``get_inverse_timesteps`` (741–752) keeps timesteps[:−(N − int(N·strength))]).
3. salesforce/EDICT c35a81f8e3f35a3ee0f93c25af87b6d3826ac5af, ``edict_functions.py``, its DDIM baseline
   (``coupled_stablediffusion(run_baseline=True)``, lines 758, 850–931: one latent, no mixing, no leapfrog, ε on
   the latent itself) with ``forward_step`` / ``reverse_step`` (623–686) on the authors' ``my_diffusers``
   DDIMScheduler (scaled-linear β in numpy float64, set_alpha_to_one=False, timesteps 980 … 0): generation steps
   t → t − 1000/N, inversion from ᾱ[t − 1000/N] to ᾱ_t with ε = unet(z, t); the first inversion step (t = 0,
   ᾱ_0 → ᾱ_0) and the last generation step are identities.
4. Flow (CONST) sampling: diffusers ``scheduling_flow_match_euler_discrete.py``, ``FlowMatchEulerDiscreteScheduler``
   (__init__ lines 127–143, set_timesteps 283–385: σ from linspace(1000·σ_max, 1000·σ_min, N)/1000, shifted
   s·σ/(1 + (s−1)·σ), terminal 0 appended, timesteps = 1000·σ; ``step`` 426–525, the update at 500–514:
   x' = x + (σ_{i+1} − σ_i)·v(x, t_i)).
   Flow *inversion* (``flow_invert``) has no official counterpart: it is the pack's own extension (the velocity at
   the current point and the next level, as DDIMInverseScheduler takes ε), tested for exactness on a straight flow in
   tests/unit/test_coords_flow.py; so is flow EDICT (tests/unit/test_edict_flow.py).

The pack runs in ComfyUI's σ-space on a ComfyUI-style wrapper of the same toy U-Net (comfy/model_sampling.py
``EPS``/``ModelSamplingDiscrete``: σ_t = sqrt((1−ᾱ_t)/ᾱ_t), input x/sqrt(σ²+1), t = nearest log-σ, D = x − σ·ε;
``CONST``/``ModelSamplingDiscreteFlow``: input x, t = 1000·σ, D = x − σ·v; comfy/samplers.py ``cfg_function``), with
the σ list of the reference's timesteps. Its states are compared in VP coordinates, z = x·sqrt(ᾱ) with ᾱ from the
reference table, at every step. Relative difference: max|pack − ref| / max|ref| over the trajectory.

Tolerance ``TOL`` = 1e-12 relative (float64; measured worst 1.7e-15 diffusers, 1.5e-15 EDICT baseline, 2.6e-16
flow). Planted mutations (ᾱ_t ↔ ᾱ_prev, ᾱ_{t−1} for ᾱ_t, the inversion's ε at the current instead of the target
timestep, the timestep list off by one, the direction's coefficient sqrt(1−ᾱ_t), the direction's sign; flow: dt's
sign, the velocity at the next level, the timestep multiplier 999) move the reference > 1000 × TOL from the pack.

No deliberate difference in the step: DDIM η = 0 in σ-space is x' = x + (σ' − σ)·ε̂, algebraically the diffusers
step. The EDICT baseline's identity steps (t = 0 → ᾱ_0) are not in the pack's strictly monotone σ lists (rounding
only). ComfyUI's float32 σ table is measured in test_edict_parity.py (4e-8 there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invedit.samplers import ddim

from parity_toys import AB, EpsToyUNet, comfy_denoiser, rand

F64 = torch.float64
TOL = 1e-12  # relative, float64
CAUGHT = 1000 * TOL


@dataclass(frozen=True)
class Mut:
    alphas_swapped: bool = False       # ᾱ_t ↔ ᾱ_prev in the step
    alpha_t_minus_one: bool = False    # ᾱ[t − 1] where ᾱ[t] belongs
    eps_at_current: bool = False       # inversion: ε = unet(z, t − step_ratio) instead of unet(z, t)
    steps_offset: int = 1              # 0: the timestep list off by one (diffusers 980 … 0, EDICT 981 … 1)
    direction_at_t: bool = False       # sqrt(1 − ᾱ_t) instead of sqrt(1 − ᾱ_prev) before ε
    direction_sign: float = 1.0        # −1: z' = sqrt(ᾱ_prev)·x̂0 − direction


NONE = Mut()
MUTATIONS = {
    "alphas of t and prev swapped": Mut(alphas_swapped=True),
    "alpha of t-1 for t": Mut(alpha_t_minus_one=True),
    "inversion eps at the current timestep": Mut(eps_at_current=True),
    "steps_offset 0 (timesteps off by one)": Mut(steps_offset=0),
    "direction coefficient sqrt(1-alpha_t)": Mut(direction_at_t=True),
    "direction sign": Mut(direction_sign=-1.0),
}


def _ab(t: int, mut: Mut) -> torch.Tensor:
    return AB[t - 1] if mut.alpha_t_minus_one and t >= 1 else AB[t]


# --- 1. diffusers DDIMScheduler (η = 0) -------------------------------------------------------------------------

def diffusers_ddim_timesteps(steps: int, steps_offset: int = 1) -> list[int]:
    step_ratio = 1000 // steps
    return ((np.arange(0, steps) * step_ratio).round()[::-1].copy().astype(np.int64) + steps_offset).tolist()


def diffusers_ddim_step(model_output, timestep, sample, steps, set_alpha_to_one, mut=NONE):
    final_alpha_cumprod = torch.tensor(1.0, dtype=F64) if set_alpha_to_one else AB[0]
    prev_timestep = timestep - 1000 // steps
    alpha_prod_t = _ab(timestep, mut)
    alpha_prod_t_prev = _ab(prev_timestep, mut) if prev_timestep >= 0 else final_alpha_cumprod
    if mut.alphas_swapped:
        alpha_prod_t, alpha_prod_t_prev = alpha_prod_t_prev, alpha_prod_t
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    std_dev_t = 0.0  # eta * variance ** 0.5, η = 0
    coef = (1 - alpha_prod_t - std_dev_t ** 2) if mut.direction_at_t else (1 - alpha_prod_t_prev - std_dev_t ** 2)
    pred_sample_direction = coef ** 0.5 * model_output
    return alpha_prod_t_prev ** 0.5 * pred_original_sample + mut.direction_sign * pred_sample_direction


def diffusers_sample(eps_fn, z, steps, strength=1.0, set_alpha_to_one=False, mut=NONE):
    """StableDiffusion(Img2Img)Pipeline's loop; returns [z_start, z after each step]."""
    timesteps = diffusers_ddim_timesteps(steps, mut.steps_offset)
    t_start = max(steps - min(int(steps * strength), steps), 0)
    traj = [z]
    for t in timesteps[t_start:]:
        z = diffusers_ddim_step(eps_fn(z, t), t, z, steps, set_alpha_to_one, mut)
        traj.append(z)
    return traj


# --- 2. diffusers DDIMInverseScheduler ---------------------------------------------------------------------------

def diffusers_inverse_timesteps(steps: int, steps_offset: int = 1) -> list[int]:
    step_ratio = 1000 // steps
    return ((np.arange(0, steps) * step_ratio).round().copy().astype(np.int64) + steps_offset).tolist()


def diffusers_inverse_step(model_output, timestep, sample, steps, set_alpha_to_one, mut=NONE):
    initial_alpha_cumprod = torch.tensor(1.0, dtype=F64) if set_alpha_to_one else AB[0]
    prev_timestep = timestep
    timestep = min(timestep - 1000 // steps, 999)
    alpha_prod_t = _ab(timestep, mut) if timestep >= 0 else initial_alpha_cumprod
    alpha_prod_t_prev = _ab(prev_timestep, mut)
    if mut.alphas_swapped:
        alpha_prod_t, alpha_prod_t_prev = alpha_prod_t_prev, alpha_prod_t
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    coef = (1 - alpha_prod_t) if mut.direction_at_t else (1 - alpha_prod_t_prev)
    pred_sample_direction = coef ** 0.5 * model_output
    return alpha_prod_t_prev ** 0.5 * pred_original_sample + mut.direction_sign * pred_sample_direction


def diffusers_invert(eps_fn, z, steps, strength=1.0, set_alpha_to_one=False, mut=NONE):
    """StableDiffusionDiffEditPipeline.invert's loop; returns [z_0, z after each step]."""
    timesteps = diffusers_inverse_timesteps(steps, mut.steps_offset)
    t_start = max(steps - min(int(steps * strength), steps), 0)
    if t_start:
        timesteps = timesteps[:-t_start]
    traj = [z]
    for t in timesteps:
        t_model = t - 1000 // steps if mut.eps_at_current else t
        z = diffusers_inverse_step(eps_fn(z, max(t_model, 0)), t, z, steps, set_alpha_to_one, mut)
        traj.append(z)
    return traj


# --- 3. the EDICT repository's DDIM baseline (run_baseline=True) -------------------------------------------------

def edict_get_alpha(t, mut=NONE):
    """get_alpha_and_beta for integer-valued t (1000/steps is an integer here); final_alpha_cumprod = ᾱ[0]."""
    t = float(t)
    if t < 0:
        return AB[0]
    return _ab(int(t), mut)


def edict_forward_step(model_output, t, sample, steps, mut=NONE):
    a_t, a_prev = edict_get_alpha(t, mut), edict_get_alpha(t - 1000 / steps, mut)
    if mut.alphas_swapped:
        a_t, a_prev = a_prev, a_t
    q = (a_t / a_prev) ** 0.5
    third = ((1 - a_t) if mut.direction_at_t else (1 - a_prev)) ** 0.5 * model_output
    return (1. / q) * sample - (1. / q) * (1 - a_t) ** 0.5 * model_output + mut.direction_sign * third


def edict_reverse_step(model_output, t, sample, steps, mut=NONE):
    a_t, a_prev = edict_get_alpha(t, mut), edict_get_alpha(t - 1000 / steps, mut)
    if mut.alphas_swapped:
        a_t, a_prev = a_prev, a_t
    q = (a_t / a_prev) ** 0.5
    third = q * ((1 - a_t) if mut.direction_at_t else (1 - a_prev)) ** 0.5 * model_output
    return q * sample + (1 - a_t) ** 0.5 * model_output - mut.direction_sign * third


def edict_baseline(eps_fn, z, steps, strength, reverse, mut=NONE):
    """coupled_stablediffusion(run_baseline=True)'s latent 0; returns [z_start, z after each step]."""
    timesteps = (np.arange(0, 1000, 1000 // steps)[::-1] + (1 - mut.steps_offset)).tolist()  # mutated: 981 … 1
    timesteps = timesteps[steps - int(steps * strength):]
    if reverse:
        timesteps = timesteps[::-1]
    traj = [z]
    for t in timesteps:
        t_model = t - 1000 // steps if (reverse and mut.eps_at_current) else t
        step = edict_reverse_step if reverse else edict_forward_step
        z = step(eps_fn(z, max(t_model, 0)), t, z, steps, mut)
        traj.append(z)
    return traj


# --- the toy U-Net and ComfyUI's view of it ------------------------------------------------------------------------

UNET = EpsToyUNet(1)  # parity_toys' toy ε-model: c = 0 null, 1 prompt


def cfg_eps(guidance):
    """What the reference pipelines hand the scheduler: ε_u + g·(ε_c − ε_u)."""
    def eps(z, t):
        e_u, e_c = UNET(z, t, 0), UNET(z, t, 1)
        return e_u + guidance * (e_c - e_u)
    return eps


def rel_traj(ours: list, ref: list) -> float:
    assert len(ours) == len(ref), (len(ours), len(ref))
    return max(float((a - b).abs().max()) for a, b in zip(ours, ref)) / max(float(b.abs().max()) for b in ref)


# level bookkeeping: a level is ᾱ; σ = sqrt((1−ᾱ)/ᾱ); VP z = x·sqrt(ᾱ) (σ = 0 ⇔ ᾱ = 1)
ONE = torch.tensor(1.0, dtype=F64)


def sigma_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def pack_sample_traj(denoiser, z_start, alpha_bars: list, flow=False):
    """ddim_sample along the levels (descending σ); the trajectory in VP coordinates."""
    sig = torch.stack([sigma_of(a) for a in alpha_bars])
    x = z_start / alpha_bars[0] ** 0.5
    traj = [z_start]
    ddim.ddim_sample(denoiser, x, sig, callback=lambda st: traj.append(st.x * alpha_bars[st.i + 1] ** 0.5))
    return traj


def pack_invert_traj(denoiser, z_start, alpha_bars: list):
    """ddim_invert along the levels (handed descending, as a scheduler's list); the trajectory in VP coordinates."""
    sig = torch.stack([sigma_of(a) for a in alpha_bars])  # ascending
    x = z_start / alpha_bars[0] ** 0.5
    traj = [z_start]
    ddim.ddim_invert(denoiser, x, sig.flip(0), callback=lambda st: traj.append(st.x * alpha_bars[st.i + 1] ** 0.5))
    return traj


# --- cases --------------------------------------------------------------------------------------------------------

DDIM_CASES = [  # (steps, strength, set_alpha_to_one, guidance)
    (50, 1.0, False, 7.5),   # SD 1.x's scheduler config (set_alpha_to_one False, steps_offset 1)
    (50, 1.0, True, 1.0),    # ᾱ_final = 1: ends at σ = 0; no guidance (null-text's inversion uses g = 1)
    (25, 0.6, False, 3.0),   # img2img / DiffEdit strength
    (30, 1.0, True, 7.5),    # a step count that does not divide 1000: step_ratio 33, 958 … 1
    (10, 0.5, False, 5.0),
]


def ddim_levels(steps, strength, set_alpha_to_one, ascending):
    """ᾱ levels of the diffusers chain: the start/final level then ᾱ at each timestep used."""
    end = ONE if set_alpha_to_one else AB[0]
    n = min(int(steps * strength), steps)
    asc = [end] + [AB[t] for t in diffusers_inverse_timesteps(steps)[:n]]
    return asc if ascending else asc[::-1]


@pytest.mark.parametrize("steps,strength,one,g", DDIM_CASES)
def test_sampling_matches_diffusers_ddim_scheduler(steps, strength, one, g):
    levels = ddim_levels(steps, strength, one, ascending=False)
    assert [AB[t] for t in diffusers_ddim_timesteps(steps)[steps - int(steps * strength):]] == levels[:-1]
    z = rand(1)
    ref = diffusers_sample(cfg_eps(g), z, steps, strength, one)
    assert float((ref[-1] - z).abs().max()) > 0.3  # the chain really moved
    assert rel_traj(pack_sample_traj(comfy_denoiser(UNET, g), z, levels), ref) <= TOL


@pytest.mark.parametrize("steps,strength,one,g", DDIM_CASES)
def test_inversion_matches_diffusers_ddim_inverse_scheduler(steps, strength, one, g):
    levels = ddim_levels(steps, strength, one, ascending=True)
    z0 = 0.8 * rand(2)
    ref = diffusers_invert(cfg_eps(g), z0, steps, strength, one)
    assert float((ref[-1] - z0).abs().max()) > 0.3
    assert rel_traj(pack_invert_traj(comfy_denoiser(UNET, g), z0, levels), ref) <= TOL


EDICT_BASELINE_CASES = [(50, 1.0, 3.0), (50, 0.8, 3.0), (20, 0.75, 7.0)]


@pytest.mark.parametrize("steps,strength,g", EDICT_BASELINE_CASES)
def test_inversion_and_sampling_match_the_edict_repositorys_ddim_baseline(steps, strength, g):
    """The EDICT baseline runs timesteps[t_limit:] = int(N·s) timesteps ending at 0; its t = 0 step is ᾱ_0 → ᾱ_0.
    The pack walks the remaining levels ᾱ_0 < ᾱ(1000/N) < … (σ ascending)."""
    n = int(steps * strength)
    levels = [AB[t] for t in range(0, 1000, 1000 // steps)][:n]  # ᾱ_0, ᾱ_stride, … (t = 0 first)
    z0 = 0.8 * rand(3)
    ref_inv = edict_baseline(cfg_eps(g), z0, steps, strength, reverse=True)
    assert float((ref_inv[1] - z0).abs().max()) <= 1e-15  # the identity step
    ours_inv = pack_invert_traj(comfy_denoiser(UNET, g), z0, levels)
    assert rel_traj(ours_inv, [ref_inv[0]] + ref_inv[2:]) <= TOL
    ref_gen = edict_baseline(cfg_eps(g), ref_inv[-1], steps, strength, reverse=False)
    ours_gen = pack_sample_traj(comfy_denoiser(UNET, g), ref_inv[-1], levels[::-1])
    assert rel_traj(ours_gen, ref_gen[:-1]) <= TOL
    assert float((ref_gen[-1] - ref_gen[-2]).abs().max()) <= 1e-14 * float(ref_gen[-2].abs().max())


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_are_caught(name):
    """Each mutation moves the diffusers sampling or inversion (50 steps, SD config, g 7.5) or the EDICT baseline's
    inversion far beyond TOL from the pack."""
    mut, g = MUTATIONS[name], 7.5
    z, z0 = rand(1), 0.8 * rand(2)
    d_sample = rel_traj(pack_sample_traj(comfy_denoiser(UNET, g), z, ddim_levels(50, 1.0, False, ascending=False)),
                        diffusers_sample(cfg_eps(g), z, 50, 1.0, False, mut))
    d_invert = rel_traj(pack_invert_traj(comfy_denoiser(UNET, g), z0, ddim_levels(50, 1.0, False, ascending=True)),
                        diffusers_invert(cfg_eps(g), z0, 50, 1.0, False, mut))
    levels = [AB[t] for t in range(0, 1000, 20)]
    ref_b = edict_baseline(cfg_eps(g), z0, 50, 1.0, True, mut)
    d_baseline = rel_traj(pack_invert_traj(comfy_denoiser(UNET, g), z0, levels), [ref_b[0]] + ref_b[2:])
    assert max(d_sample, d_invert, d_baseline) > CAUGHT, (name, d_sample, d_invert, d_baseline)


# --- 4. flow (CONST) sampling: diffusers' FlowMatchEulerDiscreteScheduler -----------------------------------------

def flow_match_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler(shift=s).set_timesteps(N) in float64 (SD3's scheduler config: shift 3)."""
    def shifted(s):
        return shift * s / (1 + (shift - 1) * s)
    train = np.linspace(1, 1000, 1000, dtype=np.float64)[::-1] / 1000
    sigma_max, sigma_min = shifted(train[0]), shifted(train[-1])
    timesteps = np.linspace(sigma_max * 1000, sigma_min * 1000, steps)
    sigmas = shifted(timesteps / 1000)
    return torch.cat([torch.from_numpy(sigmas), torch.zeros(1, dtype=F64)])


class ToyVelocity:
    """v(x, t): a seeded non-linear velocity net (conv3×3, tanh, timestep embedding) around the straight flow."""

    def __init__(self, seed=4, ch=4, hidden=16):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(hidden, ch, 3, 3, generator=g, dtype=F64) * 0.25
        self.w2 = torch.randn(ch, hidden, 3, 3, generator=g, dtype=F64) * 0.25
        self.wt = torch.randn(hidden, generator=g, dtype=F64)

    def __call__(self, x, t):
        h = F.conv2d(x, self.w1, padding=1) + (self.wt * math.sin(float(t) / 300.0))[None, :, None, None]
        return F.conv2d(torch.tanh(h), self.w2, padding=1) + 0.5 * x


VEL = ToyVelocity()


@dataclass(frozen=True)
class FlowMut:
    dt_sign: float = 1.0          # −1: x' = x − (σ_{i+1} − σ_i)·v
    v_at_next: bool = False       # the velocity at σ_{i+1} (index off by one)
    multiplier: float = 1000.0    # 999: timestep = 999·σ


FLOW_MUTATIONS = {"dt sign": FlowMut(dt_sign=-1.0), "velocity at the next level": FlowMut(v_at_next=True),
                  "timestep multiplier 999": FlowMut(multiplier=999.0)}


def diffusers_flow_sample(x, sigmas: torch.Tensor, mut=FlowMut()):
    """The SD3 pipeline's loop with FlowMatchEulerDiscreteScheduler.step (stochastic_sampling off)."""
    traj = [x]
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        timestep = (sigma_next if mut.v_at_next else sigma) * mut.multiplier
        model_output = VEL(x, timestep)
        dt = sigma_next - sigma
        x = x + mut.dt_sign * dt * model_output
        traj.append(x)
    return traj


def comfy_flow_denoiser(x, sigma):
    """ComfyUI CONST + ModelSamplingDiscreteFlow (multiplier 1000): input x, t = 1000·σ, D = x − σ·v."""
    return x - VEL(x, float(sigma) * 1000.0) * sigma


def pack_flow_traj(x, sigmas):
    traj = [x]
    ddim.flow_sample(comfy_flow_denoiser, x, sigmas, callback=lambda st: traj.append(st.x))
    return traj


@pytest.mark.parametrize("steps,strength", [(28, 1.0), (10, 1.0), (28, 0.6)])
def test_flow_sampling_matches_diffusers_flow_match_euler(steps, strength):
    sigmas = flow_match_sigmas(steps)
    sigmas = sigmas[steps - int(steps * strength):]  # SD3 img2img get_timesteps: the last int(N·s) steps
    x = rand(5)
    ref = diffusers_flow_sample(x, sigmas)
    assert float((ref[-1] - x).abs().max()) > 0.3
    assert rel_traj(pack_flow_traj(x, sigmas), ref) <= TOL


@pytest.mark.parametrize("name", list(FLOW_MUTATIONS))
def test_flow_planted_mutations_are_caught(name):
    sigmas, x = flow_match_sigmas(28), rand(5)
    d = rel_traj(pack_flow_traj(x, sigmas), diffusers_flow_sample(x, sigmas, FLOW_MUTATIONS[name]))
    assert d > CAUGHT, (name, d)
