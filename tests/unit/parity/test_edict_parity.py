"""EDICT parity: the pack's ``samplers/edict.py`` against an independent float64 transcription of the authors' code.

Official code: salesforce/EDICT at c35a81f8e3f35a3ee0f93c25af87b6d3826ac5af (mirrored in /work/.mirror/salesforce+EDICT).

``edict_functions.py``, ``coupled_stablediffusion`` (lines 710–950), the loop this file transcribes:

- schedule (815–820, 850–851): ``DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
  num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)``, ``set_timesteps(steps)``;
  ``t_limit = steps − int(steps·init_image_strength)`` (776 for an init image, 797 for ``fixed_starting_latent``, 0
  from noise); ``timesteps = schedulers[0].timesteps[t_limit:]``, flipped when ``reverse`` (inversion).
- inversion first undoes the mixing layer (856–861): y = (y − (1−p)·x)/p, then x = (x − (1−p)·y)/p.
- two sub-steps ``for latent_i in range(2)`` (864–931): leapfrog order, generation ``latent_i = (latent_i + i % 2) % 2``
  (877–879); inversion ``orig_i = len(timesteps) − (i+1)``, ``latent_i = (latent_i + (orig_i+1) % 2) % 2`` (868–872),
  without leapfrog 1 then 0 (873–876); ``latent_j`` the other latent (882); the U-Net is called on
  ``latent_pair[latent_j]`` at t with the null and the prompt embedding, ε = ε_u + g·(ε_c − ε_u) (888–921);
  ``latent_pair[latent_i] = forward_step / reverse_step(scheduler, ε, t, latent_pair[latent_i])`` (924–931).
- generation mixes after the two sub-steps (933–938): x = p·x + (1−p)·y, then y = (1−p)·x_new + p·y.

``forward_step`` (623–652): ``prev_timestep = t − 1000/steps`` (a float tensor), ᾱ_t and ᾱ_prev from
``get_alpha_and_beta``, q = sqrt(ᾱ_t/ᾱ_prev), returns sample/q − sqrt(1−ᾱ_t)/q·ε + sqrt(1−ᾱ_prev)·ε.
``reverse_step`` (655–686): q·sample + sqrt(1−ᾱ_t)·ε − q·sqrt(1−ᾱ_prev)·ε (the algebraic inverse, same ε).
``get_alpha_and_beta`` (601–620): integer t: ``alphas_cumprod[t]``; float t < 0: ``final_alpha_cumprod``; otherwise
low = floor(t), high = ceil(t), rem = t − low, ᾱ = ᾱ[low]·rem + ᾱ[high]·(1 − rem) (only reached when 1000/steps is
not an integer).

``my_diffusers/schedulers/scheduling_ddim.py`` (``DDIMScheduler.__init__``, ``set_timesteps``, lines 105–160):
β = linspace(sqrt(0.00085), sqrt(0.012), 1000, float64)², ᾱ = cumprod(1 − β), ``final_alpha_cumprod = ᾱ[0]``
(set_alpha_to_one=False), ``timesteps = arange(0, 1000, 1000 // steps)[::-1] + offset`` (offset 0).

The pack runs in ComfyUI's σ-space: the test hands it a ComfyUI-style ε-model wrapper (comfy/model_sampling.py
``EPS`` + ``ModelSamplingDiscrete``: σ_t = sqrt((1−ᾱ_t)/ᾱ_t), input x/sqrt(σ²+1), t = the nearest log-σ, D = x − σ·ε;
comfy/samplers.py ``cfg_function``: D_u + (D_c − D_u)·g) built from the same ᾱ table, and the schedule from the
pack's ``official_sigmas``. Both chains run on a seeded non-linear toy U-Net (3×3 convs, tanh, sinusoidal timestep
and conditioning embeddings) in float64. Compared: the final latent pair; relative difference
max|pack − ref| / max|ref| over both latents.

Tolerance: ``TOL`` = 1e-12 relative (float64; measured worst 3.6e-15 generating, 6.5e-15 inverting, which expands
rounding by p^-2 per step).
Planted mutations of the reference (p ↔ 1 − p, the leapfrog order swapped, the inverse's parity taken from its own
index, the timestep list off by one, the strength's step count off by one, ᾱ of t and t−Δ swapped, ᾱ_{t−1} for ᾱ_t,
the mixing undone after instead of before the sub-steps) must move it > 1000 × TOL from the pack.

Deliberate differences shown with their size (measured on this toy): step counts that do not divide 1000 (the pack's
``official_sigmas`` keeps ``steps`` steps on the 1000 // steps grid, each landing on the next timestep; the reference
code runs one more, from 990 for 30 steps, and lands on an interpolated ᾱ with swapped weights: 1.6e-2 on the same 31
timesteps, ≤ TOL once the reference lands on ᾱ[ceil]), ``official_input_scaling=False`` (6.0e-2 generating, 9.5e-2
inverting: a different chain, not only different bits), and ComfyUI's float32 σ table (adapters/edict.py hands the
pack ``model_sampling.sigmas``, float32: 4.1e-8, 7.2e-8). The final identity step (t = 0 → ᾱ_0 again) calls the
U-Net in the reference and adds and subtracts the same term; the pack skips it: rounding, inside TOL.

Flow (CONST) EDICT has no official code; it is the pack's own extension, tested for exactness in
tests/unit/test_edict_flow.py. Here only its building block is checked: one sub-step equals diffusers'
``FlowMatchEulerDiscreteScheduler.step`` (see tests/unit/parity/test_ddim_parity.py for that transcription).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from invedit.samplers import edict

from parity_toys import AB, SIGMA_TABLE, EpsToyUNet, comfy_denoiser, rand

F64 = torch.float64
TOL = 1e-12  # relative, float64 (measured worst 6.5e-15)
CAUGHT = 1000 * TOL


# --- the official schedule (my_diffusers DDIMScheduler; ᾱ: parity_toys.AB, numpy float64 as in the authors' fork) ---

class OfficialDDIM:
    """The parts of my_diffusers' DDIMScheduler(set_alpha_to_one=False) that edict_functions.py reads."""

    num_train_timesteps = 1000

    def __init__(self, steps: int, offset: int = 0):
        self.alphas_cumprod = AB
        self.final_alpha_cumprod = AB[0]
        self.num_inference_steps = steps
        self.timesteps = torch.from_numpy(np.arange(0, 1000, 1000 // steps)[::-1].copy() + offset)


# --- planted mutations ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mut:
    p_swapped: bool = False                 # mix weight p ↔ 1 − p
    leapfrog_swapped: bool = False          # the other latent first on even steps (both directions)
    inverse_parity_own_index: bool = False  # inversion's leapfrog parity from its own loop index i, not orig_i
    timestep_offset: int = 0                # set_timesteps(offset=1): 981, 961, …, 1
    t_limit_shift: int = 0                  # t_limit off by one (one step fewer)
    alphas_swapped: bool = False            # ᾱ_t ↔ ᾱ_prev in the DDIM step
    alpha_t_minus_one: bool = False         # ᾱ_{t−1} where ᾱ_t belongs
    unmix_after: bool = False               # inversion undoes the mixing after the sub-steps
    prev_alpha_at_ceil: bool = False        # not a mutation: ᾱ[ceil(t − 1000/steps)] instead of the interpolation


NONE = Mut()
MUTATIONS = {
    "p <-> 1-p": Mut(p_swapped=True),
    "leapfrog order swapped": Mut(leapfrog_swapped=True),
    "inverse parity from own index": Mut(inverse_parity_own_index=True),
    "timestep list off by one (981..1)": Mut(timestep_offset=1),
    "t_limit off by one": Mut(t_limit_shift=1),
    "alphas of t and t-dt swapped": Mut(alphas_swapped=True),
    "alpha of t-1 for t": Mut(alpha_t_minus_one=True),
    "mixing undone after the sub-steps": Mut(unmix_after=True),
}


def get_alpha_and_beta(t: torch.Tensor, sched: OfficialDDIM, mut: Mut):
    if t.dtype == torch.long:
        if mut.alpha_t_minus_one:
            alpha = sched.alphas_cumprod[t - 1] if t >= 1 else sched.final_alpha_cumprod
        else:
            alpha = sched.alphas_cumprod[t]
        return alpha, 1 - alpha
    if t < 0:
        return sched.final_alpha_cumprod, 1 - sched.final_alpha_cumprod
    if mut.prev_alpha_at_ceil:
        alpha = sched.alphas_cumprod[t.ceil().long()]
        return alpha, 1 - alpha
    low, high = t.floor().long(), t.ceil().long()
    rem = t - low
    alpha = sched.alphas_cumprod[low] * rem + sched.alphas_cumprod[high] * (1 - rem)
    return alpha, 1 - alpha


def _alphas(sched, t, mut):
    prev_timestep = t - sched.num_train_timesteps / sched.num_inference_steps
    alpha_prod_t, beta_prod_t = get_alpha_and_beta(t, sched, mut)
    alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep, sched, mut)
    if mut.alphas_swapped:
        alpha_prod_t, alpha_prod_t_prev = alpha_prod_t_prev, alpha_prod_t
        beta_prod_t = 1 - alpha_prod_t
    return alpha_prod_t, beta_prod_t, alpha_prod_t_prev


def forward_step(sched, model_output, t, sample, mut=NONE):
    alpha_prod_t, beta_prod_t, alpha_prod_t_prev = _alphas(sched, t, mut)
    alpha_quotient = (alpha_prod_t / alpha_prod_t_prev) ** 0.5
    first_term = (1. / alpha_quotient) * sample
    second_term = (1. / alpha_quotient) * (beta_prod_t ** 0.5) * model_output
    third_term = ((1 - alpha_prod_t_prev) ** 0.5) * model_output
    return first_term - second_term + third_term


def reverse_step(sched, model_output, t, sample, mut=NONE):
    alpha_prod_t, beta_prod_t, alpha_prod_t_prev = _alphas(sched, t, mut)
    alpha_quotient = (alpha_prod_t / alpha_prod_t_prev) ** 0.5
    first_term = alpha_quotient * sample
    second_term = (beta_prod_t ** 0.5) * model_output
    third_term = alpha_quotient * ((1 - alpha_prod_t_prev) ** 0.5) * model_output
    return first_term + second_term - third_term


def official_coupled(unet, guidance, cond, latent_pair, steps, strength, mix_weight, leapfrog, reverse, mut=NONE):
    """coupled_stablediffusion's loop (run_baseline=False); ``strength`` = init_image_strength (1 from noise)."""
    sched = OfficialDDIM(steps, mut.timestep_offset)
    if mut.p_swapped:
        mix_weight = 1 - mix_weight
    t_limit = steps - int(steps * strength) + mut.t_limit_shift
    timesteps = sched.timesteps[t_limit:]
    if reverse:
        timesteps = timesteps.flip(0)
    latent_pair = [z.clone() for z in latent_pair]

    def unmix(pair):
        new = [z.clone() for z in pair]
        new[1] = (new[1] - (1 - mix_weight) * new[0]) / mix_weight
        new[0] = (new[0] - (1 - mix_weight) * new[1]) / mix_weight
        return new

    for i, t in enumerate(timesteps):
        if reverse and not mut.unmix_after:
            latent_pair = unmix(latent_pair)
        for latent_i in range(2):
            if reverse:
                if leapfrog:
                    orig_i = i if mut.inverse_parity_own_index else len(timesteps) - (i + 1)
                    offset = (orig_i + 1 + mut.leapfrog_swapped) % 2
                    latent_i = (latent_i + offset) % 2
                else:
                    latent_i = (latent_i + 1) % 2
            elif leapfrog:
                offset = (i + mut.leapfrog_swapped) % 2
                latent_i = (latent_i + offset) % 2
            latent_j = (latent_i + 1) % 2
            latent_model_input, latent_base = latent_pair[latent_j], latent_pair[latent_i]
            noise_pred_uncond = unet(latent_model_input, t, 0)
            noise_pred_cond = unet(latent_model_input, t, cond)
            noise_pred = noise_pred_uncond + guidance * (noise_pred_cond - noise_pred_uncond)
            step_call = reverse_step if reverse else forward_step
            latent_pair[latent_i] = step_call(sched, noise_pred, t, latent_base, mut)
        if reverse and mut.unmix_after:
            latent_pair = unmix(latent_pair)
        if not reverse:
            new = [z.clone() for z in latent_pair]
            new[0] = mix_weight * new[0] + (1 - mix_weight) * new[1]
            new[1] = (1 - mix_weight) * new[0] + mix_weight * new[1]
            latent_pair = new
    return latent_pair


# --- the toy U-Net and ComfyUI's view of it ----------------------------------------------------------------------

UNET = EpsToyUNet(0, n_cond=3)  # parity_toys' toy ε-model: c = 0 the null prompt, 1 the base prompt, 2 an edit prompt


def rel(pack_pair, ref_pair) -> float:
    num = max(float((a - b).abs().max()) for a, b in zip(pack_pair, ref_pair))
    return num / max(float(b.abs().max()) for b in ref_pair)


# --- the cases -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    steps: int
    strength: float
    leapfrog: bool = True
    guidance: float = 3.0
    p: float = 0.93


CASES = [
    Case(50, 1.0),                              # the official defaults (50 steps, p 0.93, leapfrog), g 3 (editing)
    Case(50, 0.8, guidance=7.0),                # EDICT_editing's strength 0.8; coupled_stablediffusion's g 7
    Case(50, 0.9),                              # 45 steps: an odd count at strength < 1
    Case(25, 1.0, p=0.9),                       # 25 steps: odd count, stride 40
    Case(20, 0.75, leapfrog=False),             # leapfrog off, 15 steps
    Case(8, 1.0, p=0.97, guidance=5.0),         # stride 125
]


def pack_generate(c: Case, pair, cond=1, sigma_table=SIGMA_TABLE, **kw):
    sig = edict.official_sigmas(sigma_table, c.steps, c.strength)
    return edict.edict_sample(comfy_denoiser(UNET, c.guidance, cond, sigma_table), pair[0], pair[1], sig.to(F64), p=c.p,
                              leapfrog=c.leapfrog, **kw)


def pack_invert(c: Case, pair, cond=1, sigma_table=SIGMA_TABLE, **kw):
    sig = edict.official_sigmas(sigma_table, c.steps, c.strength)
    return edict.edict_invert(comfy_denoiser(UNET, c.guidance, cond, sigma_table), pair[0], pair[1], sig.to(F64), p=c.p,
                              leapfrog=c.leapfrog, **kw)


def ref_generate(c: Case, pair, cond=1, mut=NONE):
    return official_coupled(UNET, c.guidance, cond, pair, c.steps, c.strength, c.p, c.leapfrog, False, mut)


def ref_invert(c: Case, pair, cond=1, mut=NONE):
    return official_coupled(UNET, c.guidance, cond, pair, c.steps, c.strength, c.p, c.leapfrog, True, mut)


def start_pair(c: Case):
    """From noise (x = y) at full strength; an arbitrary pair (x ≠ y, as after an inversion) part-way."""
    noise = rand(1)
    return [noise, noise.clone()] if c.strength == 1.0 else [noise, noise + 0.05 * rand(2)]


def image_pair():
    z0 = 0.8 * rand(3)
    return [z0, z0.clone()]


def test_the_schedule_is_the_reference_codes_timestep_list():
    """official_sigmas = σ(t) for the reference code's timesteps[t_limit:], then σ(0) again (its identity step)."""
    for c in CASES:
        sched = OfficialDDIM(c.steps)
        ts = sched.timesteps[c.steps - int(c.steps * c.strength):]
        sig = edict.official_sigmas(SIGMA_TABLE, c.steps, c.strength)
        assert torch.equal(sig, torch.cat([SIGMA_TABLE[ts], SIGMA_TABLE[:1]])), c
        assert edict.official_timesteps(c.steps, strength=c.strength) == ts.tolist()


@pytest.mark.parametrize("c", CASES, ids=str)
def test_generation_matches_the_official_loop(c):
    pair = start_pair(c)
    ref = ref_generate(c, pair)
    assert float((ref[0] - pair[0]).abs().max()) > 0.3  # the chain really moved the latents
    assert rel(pack_generate(c, pair), ref) <= TOL


@pytest.mark.parametrize("c", CASES, ids=str)
def test_inversion_matches_the_official_loop(c):
    pair = image_pair()
    ref = ref_invert(c, pair)
    assert float((ref[0] - pair[0]).abs().max()) > 0.3
    assert rel(pack_invert(c, pair), ref) <= TOL


def test_edit_invert_with_the_base_prompt_then_generate_with_the_edit_prompt():
    """EDICT_editing (lines 58–117): invert with the base prompt, then generate from the pair with the edit prompt
    (fixed_starting_latent, same strength), g 3, p 0.93, 50 steps, strength 0.8."""
    c = Case(50, 0.8)
    ref = ref_generate(c, ref_invert(c, image_pair(), cond=1), cond=2)
    ours = pack_generate(c, pack_invert(c, image_pair(), cond=1), cond=2)
    assert rel(ours, ref) <= TOL
    assert float((ref[0] - image_pair()[0]).abs().max()) > 0.05  # the edit changed the image latent


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_are_caught(name):
    """Each mutation of the reference moves the generation or the inversion far beyond TOL (50 steps: an even count,
    which the inverse-parity mutation needs; the offset mutation needs a timestep list that reaches t = 981)."""
    mut = MUTATIONS[name]
    c = Case(50, 0.8)
    gen, inv = start_pair(c), image_pair()
    d_gen = rel(pack_generate(c, gen), ref_generate(c, gen, mut=mut))
    d_inv = rel(pack_invert(c, inv), ref_invert(c, inv, mut=mut))
    full = Case(50, 1.0)
    d_full = rel(pack_generate(full, start_pair(full)), ref_generate(full, start_pair(full), mut=mut))
    assert max(d_gen, d_inv, d_full) > CAUGHT, (name, d_gen, d_inv, d_full)


# --- deliberate differences ------------------------------------------------------------------------------------

def test_step_counts_not_dividing_1000_differ_from_the_reference_code_as_documented():
    """30 steps: the reference code runs arange(0, 1000, 33)[::-1] = 990, 957, …, 0 (31 timesteps) and steps from t
    to t − 33.33, an interpolated ᾱ (weights ᾱ[low]·rem + ᾱ[high]·(1 − rem)); the next step starts from ᾱ at the
    next timestep, so each step lands ~0.67 timestep off where the next one starts. The pack's official_sigmas keeps
    30 steps, 957 … 0, each landing on the next timestep (edict.reference_code_timesteps documents the list)."""
    steps = 30
    assert OfficialDDIM(steps).timesteps.tolist() == edict.reference_code_timesteps(steps)
    assert len(edict.reference_code_timesteps(steps)) == 31 and len(edict.official_timesteps(steps)) == 30
    c = Case(steps, 1.0)
    pair = start_pair(c)
    ref = ref_generate(c, pair)
    d = rel(pack_generate(c, pair), ref)  # different lists (from 957 vs 990): not comparable, just far apart
    assert 1e-2 < d < 1, d  # measured 0.18
    # The reference's own 31 timesteps as a σ list: the gap left is the interpolated landing level alone ...
    ts = edict.reference_code_timesteps(steps)
    sig = torch.cat([SIGMA_TABLE[ts], SIGMA_TABLE[:1]])
    ours = edict.edict_sample(comfy_denoiser(UNET, c.guidance, 1), pair[0], pair[1], sig)
    d31 = rel(ours, ref)
    assert 1e-3 < d31 < 0.1, d31  # measured 1.6e-2
    # ... which vanishes when the reference lands on ᾱ at the next timestep (ceil of t − 33.33) instead.
    assert rel(ours, ref_generate(c, pair, mut=Mut(prev_alpha_at_ceil=True))) <= TOL


def test_without_official_input_scaling_the_chain_differs_by_the_measured_amount():
    """official_input_scaling=False feeds the second sub-step's U-Net x_inter scaled at σ' (its own level) instead of
    the VP latent itself: still exactly invertible, but a different chain."""
    c = Case(50, 1.0)
    pair, inv = start_pair(c), image_pair()
    d_gen = rel(pack_generate(c, pair, official_input_scaling=False), ref_generate(c, pair))
    d_inv = rel(pack_invert(c, inv, official_input_scaling=False), ref_invert(c, inv))
    assert CAUGHT < min(d_gen, d_inv) and max(d_gen, d_inv) < 0.3, (d_gen, d_inv)  # measured 6.0e-2, 9.5e-2


def test_comfys_float32_sigma_table_moves_the_chain_by_float32_rounding_only():
    """adapters/edict.py hands the pack ComfyUI's ``model_sampling.sigmas``, which ComfyUI stores in float32: the
    levels (and so a, b) carry float32 rounding; the U-Net still gets the exact VP latent and timestep."""
    c = Case(50, 1.0)
    pair, inv = start_pair(c), image_pair()
    table32 = SIGMA_TABLE.float().double()
    d_gen = rel(pack_generate(c, pair, sigma_table=table32), ref_generate(c, pair))
    d_inv = rel(pack_invert(c, inv, sigma_table=table32), ref_invert(c, inv))
    assert TOL < max(d_gen, d_inv) < 1e-6, (d_gen, d_inv)  # measured 4.1e-8, 7.2e-8


# --- flow (CONST): the pack's own extension; its building block is diffusers' flow Euler step ------------------------

def test_one_flow_edict_sub_step_is_diffusers_flow_match_euler_step():
    """FlowMatchEulerDiscreteScheduler.step (diffusers 0.39.0, scheduling_flow_match_euler_discrete.py, lines
    500–514): prev_sample = sample + (σ_next − σ)·v, v = the model's velocity at timestep 1000·σ. With x = y and
    p = 1 the pack's first sub-step must be exactly that step (ComfyUI CONST: D = x − σ·v, input x)."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 4, generator=g, dtype=F64) * 0.5

    def velocity(x, t):
        return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x) + t / 1000.0) - 0.5 * x

    def D(x, sigma):
        return x - float(sigma) * velocity(x, 1000.0 * float(sigma))

    eps = edict.EpsFromDenoiser(D, None, edict.FLOW)
    sig = torch.tensor([1.0, 0.9, 0.6, 0.25, 0.0], dtype=F64)
    x = rand(7)
    for s, s_next in zip(sig[:-1], sig[1:]):
        ours, _ = edict.edict_step(eps, x, x, s, s_next, 1.0, False)
        ref = x + (s_next - s) * velocity(x, 1000.0 * float(s))
        assert float((ours - ref).abs().max()) <= TOL * float(ref.abs().max())
        x = ref
