"""BDIA parity: the pack's ``samplers/bdia.py`` against an independent float64 transcription of the authors' code.

Official code: guoqiang-zhang-x/BDIA at d4c951875a6b22343a8f3ffa77e38c1a1d3dcfe3 (fetched into
/work/.mirror/guoqiang-zhang-x+BDIA), ``image-editing/bdia_edict_functions.py``, ``BDIA_stablediffusion`` (lines
1043–1381, the "MAIN BDIA-DDIM FUNCTION" that ``BDIA_editing``, lines 122–187, calls with ``run_baseline=True``: one
latent sequence, ``latent_i == 1`` skipped):

- schedule (1150–1158): ``DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
  num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)``, ``set_timesteps(steps)``;
  ``t_limit = steps − int(steps·init_image_strength)`` (1109 for an image, 1132 for ``fixed_starting_latent``, 0 from
  noise); ``timesteps = timesteps[t_limit:]``, flipped when ``reverse`` (1186–1187).
- start (1189–1197): inversion ``t_prev = None``, ``new_latent = latent_pair[0]``; generation ``latent_prev =
  latent_pair[0]``, ``new_latent = latent_pair[1]``, ``t_prev = timesteps[0]``, ``timesteps = timesteps[1:]``
  (from noise both are the noise: ``latent_pair = [latent.clone(), latent.clone()]``, 1137).
- each timestep (1200–1352): ``latent_model_input = new_latent``; the U-Net at ``current_timestep`` = t − 1000/steps
  when ``reverse``, else t (1212–1215); ε = ε_u + g·(ε_c − ε_u) (1249–1251).
  Inversion, first step (1253–1277): a DDIM inversion step from t − Δ to t (``get_alpha_and_beta`` of t and of
  t − Δ; q·x + sqrt(1 − ᾱ_t)·ε − q·sqrt(1 − ᾱ_{t−Δ})·ε). Later steps (1278–1302): ``new_latent = reverse_step(ε, t,
  x)``, ``latent_backward = forward_step(ε, t − Δ, x)``, ``new_latent = latent_prev/γ − latent_backward/γ +
  new_latent``. Generation (1315–1350): ``new_latent = forward_step(ε, t, x)``, ``latent_backward`` = the DDIM step
  of x from t to ``t_prev`` (q = sqrt(ᾱ_{t_prev}/ᾱ_t)), ``new_latent = latent_prev − (1−γ)(latent_prev − x) −
  γ(latent_backward − x) + (new_latent − x)``. Both end with ``t_prev = t``, ``latent_prev = x``.
- result (1359–1360): ``[new_latent, latent_model_input]``.
``forward_step``, ``reverse_step`` and ``get_alpha_and_beta`` (671–763; the EDICT reference code's, verbatim) and
the scheduler's ``alphas_cumprod`` / ``final_alpha_cumprod`` / ``timesteps`` (my_diffusers DDIMScheduler) are
transcribed below.

The pack runs in ComfyUI's σ-space on the same toy as the EDICT parity test (parity_toys: a ComfyUI-style ε-model
wrapper over a seeded non-linear toy U-Net, float64) with the schedule from ``edict.official_sigmas`` (σ(t) for the
official timesteps, then σ(0) again: the reference's last level "t − Δ < 0", whose ᾱ is ``final_alpha_cumprod`` =
ᾱ_0). Compared: the final pair; relative difference max|pack − ref| / max|ref|.

Tolerance: ``TOL`` = 1e-12 relative (float64; measured worst 3.4e-15 regenerating, 1.7e-14 inverting: the inversion
divides by γ a step, which grows the pair and its rounding alike, so the relative difference stays small).
Planted mutations of the reference (γ ↔ 1 − γ, forward and backward DDIM steps swapped, ``t_prev`` not advanced,
the inversion's /γ dropped, the timestep list off by one, ``t_limit`` off by one, the U-Net at t instead of t − Δ
while inverting) must move it > 1000 × TOL from the pack.

Deliberate differences shown with their size: from noise the reference takes the noise as both states of the first
pair (``latent_pair = [noise, noise]``, so its first model call is at the second timestep and the noise is read as a
level-(T−Δ) latent); the pack takes the paper's DDIM step to the second level first (the reference's own
commented-out alternative, 1199–1202): 0.14 apart at 20 steps; the reference's start is the pack's regeneration from
the pair (noise, noise). Its first inversion step (t = 0: from ᾱ_final = ᾱ_0 to ᾱ_0) is an identity
with a model call whose ε cancels; the pack skips the call.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from invedit.samplers import bdia, edict

import numpy as np

from parity_toys import AB, SIGMA_TABLE, EpsToyUNet, comfy_denoiser, rand

F64 = torch.float64
TOL = 1e-12
CAUGHT = 1000 * TOL
UNET = EpsToyUNet(0, n_cond=3)  # c = 0 the null prompt, 1 the base prompt, 2 an edit prompt


@dataclass(frozen=True)
class Mut:
    gamma_swapped: bool = False        # γ ↔ 1 − γ
    steps_swapped: bool = False        # forward_step where reverse_step belongs and back
    t_prev_frozen: bool = False        # t_prev not advanced after a step
    no_divide: bool = False            # inversion: latent_prev − latent_backward + new (the /γ dropped)
    timestep_offset: int = 0           # set_timesteps(offset=1)
    t_limit_shift: int = 0             # one step fewer
    invert_model_at_t: bool = False    # the U-Net at t instead of t − Δ while inverting


NONE = Mut()


class OfficialDDIM:
    """The parts of my_diffusers' DDIMScheduler(set_alpha_to_one=False) that bdia_edict_functions.py reads."""

    num_train_timesteps = 1000

    def __init__(self, steps: int, offset: int = 0):
        self.alphas_cumprod = AB
        self.final_alpha_cumprod = AB[0]
        self.num_inference_steps = steps
        self.timesteps = torch.from_numpy(np.arange(0, 1000, 1000 // steps)[::-1].copy() + offset)


def get_alpha_and_beta(t, sched):
    """Lines 671–690."""
    if t.dtype == torch.long:
        alpha = sched.alphas_cumprod[t]
        return alpha, 1 - alpha
    if t < 0:
        return sched.final_alpha_cumprod, 1 - sched.final_alpha_cumprod
    low, high = t.floor().long(), t.ceil().long()
    rem = t - low
    alpha = sched.alphas_cumprod[low] * rem + sched.alphas_cumprod[high] * (1 - rem)
    return alpha, 1 - alpha


def forward_step(sched, model_output, timestep, sample):
    """Lines 693–724: the DDIM step from ``timestep`` to timestep − 1000/steps."""
    prev_timestep = timestep - sched.num_train_timesteps / sched.num_inference_steps
    alpha_prod_t, beta_prod_t = get_alpha_and_beta(timestep, sched)
    alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep, sched)
    alpha_quotient = (alpha_prod_t / alpha_prod_t_prev) ** 0.5
    return (sample / alpha_quotient - (beta_prod_t ** 0.5) * model_output / alpha_quotient
            + ((1 - alpha_prod_t_prev) ** 0.5) * model_output)


def reverse_step(sched, model_output, timestep, sample):
    """Lines 727–763: its algebraic inverse (from timestep − 1000/steps up to ``timestep``)."""
    prev_timestep = timestep - sched.num_train_timesteps / sched.num_inference_steps
    alpha_prod_t, beta_prod_t = get_alpha_and_beta(timestep, sched)
    alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep, sched)
    alpha_quotient = (alpha_prod_t / alpha_prod_t_prev) ** 0.5
    return (alpha_quotient * sample + (beta_prod_t ** 0.5) * model_output
            - alpha_quotient * ((1 - alpha_prod_t_prev) ** 0.5) * model_output)
MUTATIONS = {
    "gamma <-> 1-gamma": Mut(gamma_swapped=True),
    "forward and backward DDIM steps swapped": Mut(steps_swapped=True),
    "t_prev not advanced": Mut(t_prev_frozen=True),
    "inverse without /gamma": Mut(no_divide=True),
    "timestep list off by one (981..1)": Mut(timestep_offset=1),
    "t_limit off by one": Mut(t_limit_shift=1),
    "inversion evaluates at t, not t - dt": Mut(invert_model_at_t=True),
}


def _ddim_between(sched, eps, t_from, t_to, x):
    """The reference's inline DDIM step of x from t_from to t_to (lines 1268–1276 and 1331–1337)."""
    a_to, b_to = get_alpha_and_beta(t_to, sched)
    a_from, _ = get_alpha_and_beta(t_from, sched)
    q = (a_to / a_from) ** 0.5
    return q * x + (b_to ** 0.5) * eps - q * ((1 - a_from) ** 0.5) * eps


def official_bdia(guidance, cond, latent_pair, steps, strength, gamma, reverse, mut=NONE):
    """BDIA_stablediffusion's loop (run_baseline=True); returns [new_latent, latent_model_input]."""
    sched = OfficialDDIM(steps, mut.timestep_offset)
    if mut.gamma_swapped:
        gamma = 1 - gamma
    fwd, rev = (reverse_step, forward_step) if mut.steps_swapped else (forward_step, reverse_step)
    t_limit = steps - int(steps * strength) + mut.t_limit_shift
    timesteps = sched.timesteps[t_limit:]
    if reverse:
        timesteps = timesteps.flip(0)
        t_prev, latent_prev, new_latent = None, None, latent_pair[0].clone()
    else:
        latent_prev, new_latent = latent_pair[0].clone(), latent_pair[1].clone()
        t_prev, timesteps = timesteps[0], timesteps[1:]
    dt = sched.num_train_timesteps / sched.num_inference_steps
    latent_model_input = new_latent
    for t in timesteps:
        latent_model_input = new_latent
        current_timestep = (t if mut.invert_model_at_t else t - dt) if reverse else t
        u = UNET(latent_model_input, float(current_timestep), 0)
        c = UNET(latent_model_input, float(current_timestep), cond)
        noise_pred = u + guidance * (c - u)
        if reverse and t_prev is None:
            cur = t - dt
            new_latent = _ddim_between(sched, noise_pred, cur, t, latent_model_input)
            t_prev, latent_prev = cur, latent_model_input
        elif reverse:
            cur = t - dt
            new_latent = rev(sched, noise_pred, t, latent_model_input)
            latent_backward = fwd(sched, noise_pred, cur, latent_model_input)
            if mut.no_divide:
                new_latent = latent_prev - latent_backward + new_latent
            else:
                new_latent = latent_prev / gamma - latent_backward / gamma + new_latent
            if not mut.t_prev_frozen:
                t_prev = cur
            latent_prev = latent_model_input
        else:
            new_latent = fwd(sched, noise_pred, t, latent_model_input)
            latent_backward = _ddim_between(sched, noise_pred, t, t_prev, latent_model_input)
            new_latent = (latent_prev - (1 - gamma) * (latent_prev - latent_model_input)
                          - gamma * (latent_backward - latent_model_input) + (new_latent - latent_model_input))
            if not mut.t_prev_frozen:
                t_prev = t
            latent_prev = latent_model_input
    return [new_latent, latent_model_input]


@dataclass(frozen=True)
class Case:
    steps: int
    strength: float
    gamma: float = 0.5
    guidance: float = 3.0


CASES = [
    Case(20, 1.0),                      # γ 0.5 (the paper's), g 3 (BDIA_editing's)
    Case(50, 0.8, gamma=0.8),           # BDIA_editing's strength 0.8 (40 steps)
    Case(25, 1.0, gamma=0.7, guidance=7.0),   # stride 40, an odd count
    Case(10, 0.9, gamma=1.0),           # 9 steps, the symmetric step
]


def sigmas(c: Case):
    return edict.official_sigmas(SIGMA_TABLE, c.steps, c.strength).to(F64)


def pack_invert(c: Case, z0, cond=1):
    return bdia.bdia_invert(comfy_denoiser(UNET, c.guidance, cond), z0, sigmas(c), c.gamma)


def pack_generate(c: Case, pair, cond=1):
    return bdia.bdia_sample(comfy_denoiser(UNET, c.guidance, cond), pair[0], sigmas(c), c.gamma, z_next=pair[1])


def rel(pack_pair, ref_pair) -> float:
    num = max(float((a - b).abs().max()) for a, b in zip(pack_pair, ref_pair))
    return num / max(float(b.abs().max()) for b in ref_pair)


def image():
    return 0.8 * rand(3)


def arbitrary_pair():
    """A pair as an inversion leaves it (z_T ≠ z_T−1)."""
    noise = rand(1)
    return [noise, noise + 0.05 * rand(2)]


@pytest.mark.parametrize("c", CASES, ids=str)
def test_inversion_matches_the_official_loop(c):
    z0 = image()
    ref = official_bdia(c.guidance, 1, [z0, z0.clone()], c.steps, c.strength, c.gamma, reverse=True)
    assert float((ref[0] - z0).abs().max()) > 0.3  # the chain really moved
    assert rel(pack_invert(c, z0), ref) <= TOL


@pytest.mark.parametrize("c", CASES, ids=str)
def test_regeneration_from_a_pair_matches_the_official_loop(c):
    pair = arbitrary_pair()
    ref = official_bdia(c.guidance, 1, pair, c.steps, c.strength, c.gamma, reverse=False)
    assert float((ref[0] - pair[0]).abs().max()) > 0.3
    assert rel(pack_generate(c, pair), ref) <= TOL


def test_edit_invert_with_the_base_prompt_then_regenerate_with_the_edit_prompt():
    """BDIA_editing (lines 122–187): invert with the base prompt, regenerate from the pair with the edit prompt,
    same strength; and the same prompt gives the image latent back (the pack: to float64 rounding)."""
    c = Case(50, 0.8, gamma=0.8)
    z0 = image()
    ref_pair = official_bdia(c.guidance, 1, [z0, z0.clone()], c.steps, c.strength, c.gamma, reverse=True)
    ref = official_bdia(c.guidance, 2, ref_pair, c.steps, c.strength, c.gamma, reverse=False)
    pair = pack_invert(c, z0)
    assert rel(pack_generate(c, pair, cond=2), ref) <= TOL
    assert float((ref[0] - z0).abs().max()) > 0.05  # the edit changed the latent
    back = pack_generate(c, pair, cond=1)[0]
    assert float((back - z0).abs().max()) <= 1e-12


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_are_caught(name):
    mut = MUTATIONS[name]
    c = Case(50, 0.8, gamma=0.8)
    z0, pair = image(), arbitrary_pair()
    d_inv = rel(pack_invert(c, z0), official_bdia(c.guidance, 1, [z0, z0.clone()], c.steps, c.strength, c.gamma,
                                                  reverse=True, mut=mut))
    d_gen = rel(pack_generate(c, pair), official_bdia(c.guidance, 1, pair, c.steps, c.strength, c.gamma,
                                                      reverse=False, mut=mut))
    assert max(d_inv, d_gen) > CAUGHT, (name, d_inv, d_gen)


def test_from_noise_the_reference_reads_the_noise_as_both_states_the_pack_takes_a_ddim_step():
    """The reference's generation from noise is the pack's regeneration from the pair (noise, noise); the pack's
    generation takes the paper's DDIM step σ_0 → σ_1 first: another chain, measured apart."""
    c = Case(20, 1.0)
    noise = rand(1)
    ref = official_bdia(c.guidance, 1, [noise, noise.clone()], c.steps, c.strength, c.gamma, reverse=False)
    assert rel(pack_generate(c, [noise, noise]), ref) <= TOL
    ours = bdia.bdia_sample(comfy_denoiser(UNET, c.guidance, 1), noise, sigmas(c), c.gamma)
    d = rel(ours, ref)
    assert 1e-2 < d < 0.5, d  # measured 0.14


def test_the_first_inversion_step_of_the_official_schedule_is_an_identity():
    """From ᾱ_final = ᾱ_0 to ᾱ_0 (the repeated last σ): the reference's DDIM step returns x + s − s; the pack copies
    x and calls no model (n − 1 calls for n steps, the reference n)."""
    c = Case(10, 1.0)
    calls = []
    D = comfy_denoiser(UNET, c.guidance, 1)

    def counted(x, s):
        calls.append(float(s))
        return D(x, s)
    bdia.bdia_invert(counted, image(), sigmas(c), c.gamma)
    assert len(calls) == c.steps - 1 and min(calls) == pytest.approx(float(SIGMA_TABLE[0]))
