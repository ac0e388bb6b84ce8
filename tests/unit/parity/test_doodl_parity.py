"""DOODL parity with the official code, float64, on a seeded non-linear toy ε-model and a toy pixel loss.

The reference below is transcribed from salesforce/DOODL (commit 52a52da, the only one), not from the pack:

- ``helper_functions.py`` ``get_alpha_and_beta(t, scheduler)``: ᾱ_t = alphas_cumprod[t], β_t = 1 − ᾱ_t; t < 0 gives
  ``final_alpha_cumprod`` (= alphas_cumprod[0]: ``set_alpha_to_one=False``). The scheduler (``SteppingLayer``): SD's
  scaled-linear betas linspace(sqrt(0.00085), sqrt(0.012), 1000)², ``set_timesteps``: arange(0, 1000, 1000 // T)
  reversed (``my_half_diffusers/schedulers/scheduling_ddim.py``).
- ``helper_functions.py`` ``forward_step``: t' = t − 1000/T, q = sqrt(ᾱ_t/ᾱ_t'),
  z' = z/q − sqrt(β_t)·ε/q + sqrt(1 − ᾱ_t')·ε.
- ``doodl.py`` ``SteppingLayer.forward`` (reverse=False): for base_latent_i in 0, 1: latent_i = (base + i % 2) % 2,
  latent_j = latent_i + 1 mod 2; the model input is pair[latent_j] (first pass) or the first pass's output (second
  pass), both evaluated at the step's t; ε = ε_u + g·(ε_c − ε_u) (two U-Net calls, ``guidance_scale``); with a
  ``clip_cond_fn``: fac = sqrt(β_t), ε ← ε − fac·clip_cond_fn(input, t); new = forward_step(ε, t, pair[latent_i]);
  outputs ordered back by latent_i. ``single_variable``: latent_i = latent_j = 0, output cat([new, new]).
- ``doodl.py`` ``MixingLayer.forward``: x' = p·x + (1 − p)·y, y' = (1 − p)·x' + p·y (p = 0.93).
- ``doodl.py`` ``gen`` (latent_traversal=True), per optimisation step m: the EDICT chain (SteppingLayer, MixingLayer)
  from the cloned pair, ``vae.decode(l / 0.18215)`` of both entries, losses λ·c(·) (the loss functions multiply by
  ``grad_scale``) summed, ``sum_loss.backward()``; grad = −0.5·pair.grad; tied: grad averaged over the two entries;
  ONE perturbation ``perturb_grad_scale·randn_like(pair[0])`` for both; per entry: g.clip(±clip_grad_val); momentum
  0.9 without dampening (m = 0: b = g, else b = 0.9·b_prev + g; g = b); new = l + g + perturbation; tied: both
  entries = their mean; ``renormalize_latents``: each entry ·orig_norm/‖entry‖, orig_norm = ‖x_T^(0)‖.
- ``doodl.py`` ``get_generic_cond_fn.cond_fn`` with ``one_step_baseline=True`` (the paper's baseline): l = x detached
  with grad; ε_u = unet(l, t, embedding_unconditional); fac = sqrt(β_t); x̂0 = (l − fac·ε_u)/sqrt(ᾱ_t);
  sample = x̂0·fac + l·(1 − fac); loss = λ·c(vae.decode(sample/0.18215)); returns −1·∂loss/∂l. ``gen`` runs it
  inside ``SteppingLayer(clip_cond_fn=cond_fn)``; with ``single_variable=True`` that is one DDIM chain (mix = Identity).

The one substitution: the official perturbation draws from the global CUDA RNG (``randn_like``); the reference draws
the same shape from a seeded CPU ``torch.Generator``, one draw per iteration, as the pack does.

Compared (tolerance TOL = 1e-10 relative, float64): the chain's ends and the gradient wrt the initial pair (reversible
and checkpoint backprop), the optimisation loop (clipped steps, losses and the latent after several iterations, tied +
renormalised generation, untied editing with ``pair_steps`` separate), and the one-step baseline. Planted mutations of
the reference (a coefficient, a sign, an index parity, an off-by-one) each move the compared quantity > 1000·TOL.
Documented differences, with their measured size: ``shared_step`` (the pack's default for EDICT pairs) and the
official default ``single_variable=False`` for the baseline (guidance inside EDICT's coupled sub-steps).
Run with -s to see the figures.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from invedit.optim.doodl import (ChainSpec, DOODLConfig, doodl_optimize, edict_chain, one_step_guidance_sample,
                                 pair_loss_gradients)
from invedit.samplers import edict
from tinynets import F64, TinyEps, sd15_sigmas, sigma_denoiser

TOL = 1e-10
STEPS = 10          # official timesteps 900, 800, …, 0 (the last one the identity step)
P, G = 0.93, 7.5    # EDICT mixing weight, classifier-free guidance scale (the official defaults)
SHAPE = (1, 4, 8, 8)
VAE_SCALE = 0.18215


# --- the toy models (shared inputs of both sides) ---------------------------------------------------------------------

NET_U, NET_C = TinyEps(seed=11), TinyEps(seed=12)
OUT = 0.035


def unet(z, t, emb):
    """The toy U-Net ε(z, t, embedding): two seeded tanh conv nets, one per embedding ('uc' the null prompt)."""
    return OUT * (NET_U if emb == "uc" else NET_C)(z, t)


def _g(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


DEC_W, FEAT_W, CLS_W = _g(20, 3, 4, 1, 1) * 0.5, _g(21, 6, 3, 3, 3), _g(22, 5, 6)


def vae_decode(latent):
    """Toy VAE decoder (the official calls it on latent/0.18215): 1×1 conv + tanh, pixels in (−1, 1)."""
    return torch.tanh(torch.nn.functional.conv2d(latent * 0.05, DEC_W))


def pixel_loss(im, lam):
    """Toy official-style loss function: pixels ((im/2) + 0.5).clamp(0, 1), a tiny conv classifier, cross-entropy to
    class 1, times the guidance weight λ (``grad_scale``)."""
    x = ((im / 2) + 0.5).clamp(0, 1)
    feats = torch.tanh(torch.nn.functional.conv2d(x, FEAT_W, padding=1) * 3).mean(dim=(2, 3))
    return lam * torch.nn.functional.cross_entropy(feats @ CLS_W.T * 3, torch.tensor([1]))


def decode_loss(lam):
    return lambda z: pixel_loss(vae_decode(z / VAE_SCALE), lam)


# --- the reference: a transcription of salesforce/DOODL ---------------------------------------------------------------

def _official_alphas_cumprod():
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas, axis=0)


ALPHAS_CUMPROD = _official_alphas_cumprod()
FINAL_ALPHA_CUMPROD = ALPHAS_CUMPROD[0]  # set_alpha_to_one=False
TIMESTEPS = list(np.arange(0, 1000, 1000 // STEPS)[::-1])


def get_alpha_and_beta(t):
    if t < 0:
        return float(FINAL_ALPHA_CUMPROD), 1 - float(FINAL_ALPHA_CUMPROD)
    alpha = float(ALPHAS_CUMPROD[int(t)])
    return alpha, 1 - alpha


class Mut(dict):
    """Planted mutations of the reference (all off by default)."""
    def __getattr__(self, k):
        return self.get(k, False)


def forward_step(model_output, t, sample, m):
    prev_timestep = t - 1000 / STEPS + (1 if m.prev_off_by_one else 0)
    alpha_prod_t, beta_prod_t = get_alpha_and_beta(t)
    alpha_prod_t_prev, _ = get_alpha_and_beta(prev_timestep)
    alpha_quotient = (alpha_prod_t / alpha_prod_t_prev) ** 0.5
    first_term = (1. / alpha_quotient) * sample
    second_term = (1. / alpha_quotient) * (beta_prod_t ** 0.5) * model_output
    third_term = ((1 - alpha_prod_t_prev) ** 0.5) * model_output
    return first_term - second_term + third_term


def cfg_noise(latent_model_input, t, m):
    noise_pred_uncond = unet(latent_model_input, t, "uc")
    noise_pred_cond = unet(latent_model_input, t, "c")
    return noise_pred_uncond + (G + (0.5 if m.cfg_scale else 0)) * (noise_pred_cond - noise_pred_uncond)


def stepping_layer(i, t, pair, m, clip_cond_fn=None, single_variable=False):
    """``SteppingLayer.forward`` (reverse=False); ``pair`` is the list [x, y]."""
    first_output = None
    for base_latent_i in range(2):
        offset = (i + (1 if m.leapfrog_parity else 0)) % 2
        latent_i = (base_latent_i + offset) % 2
        latent_j = (latent_i + 1) % 2
        if single_variable:
            latent_i = latent_j = 0
        latent_model_input = pair[latent_j] if base_latent_i == 0 else first_output
        latent_base = pair[latent_i]
        t_model = t - 1000 // STEPS if (m.second_input_at_next and base_latent_i == 1) else t
        noise_pred = cfg_noise(latent_model_input, t_model, m)
        if clip_cond_fn is not None:
            clip_grad = clip_cond_fn(latent_model_input, t)
            alpha_prod_t, beta_prod_t = get_alpha_and_beta(t)
            fac = beta_prod_t ** 0.5
            noise_pred = noise_pred - fac * clip_grad
        new_latent = forward_step(noise_pred, t, latent_base, m)
        if single_variable:
            return [new_latent, new_latent]
        if base_latent_i == 0:
            first_output = new_latent
        else:
            return [first_output, new_latent] if latent_i == 1 else [new_latent, first_output]


def mixing_layer(pair, m):
    p = P + (0.01 if m.mix_p else 0)
    x0 = p * pair[0] + (1 - p) * pair[1]
    x1 = (1 - p) * (pair[0] if m.mix_old_x else x0) + p * pair[1]
    return [x0, x1]


def official_chain(pair, m):
    for i, t in enumerate(TIMESTEPS):
        pair = stepping_layer(i, t, pair, m)
        pair = mixing_layer(pair, m)
    return pair


def official_grad(pair, lam, m):
    """The gradient line of ``gen``'s loop: −0.5·∂(Σ losses)/∂pair (before tying and clipping), and Σ losses."""
    with torch.enable_grad():
        orig = [p.clone().detach().requires_grad_(True) for p in pair]
        ims = [vae_decode(lat / VAE_SCALE) for lat in official_chain(list(orig), m)]
        sum_loss = sum(pixel_loss(im, lam) for im in ims)
        grads = torch.autograd.grad(sum_loss, orig)
    factor = -1.0 if m.grad_factor else -0.5
    return [factor * g for g in grads], float(sum_loss.detach())


def official_traversal(latent_pair, lam, iterations, clip_grad_val, perturb_grad_scale, generator, m,
                       tied_latents=True, renormalize_latents=True):
    """``gen``'s optimisation loop (``latent_traversal=True``, momentum on, Nesterov off). Returns the pair after
    ``iterations`` steps, the clipped gradients per step, the summed losses, the fraction of clipped elements."""
    orig_norm = latent_pair[0].norm().item()
    prev_b_arr = [None, None]
    clipped, losses, fraction = [], [], []
    for step in range(iterations):
        grad, sum_loss = official_grad(latent_pair, lam, m)
        losses.append(sum_loss)
        if tied_latents:
            mean = 0.5 * (grad[0] + grad[1]) if not m.tie_first_only else grad[0]
            grad = [mean, mean.clone()]
        if perturb_grad_scale and not m.no_perturbation:
            perturbation = perturb_grad_scale * torch.randn(SHAPE, generator=generator, dtype=F64)
        else:
            perturbation = 0
        new_latents, step_clipped = [], []
        for grad_idx, (g, l) in enumerate(zip(grad, latent_pair)):
            if m.perturbation_per_entry and grad_idx == 1:
                perturbation = perturb_grad_scale * torch.randn(SHAPE, generator=generator, dtype=F64)
            if clip_grad_val is not None and not m.clip_after_momentum:
                fraction.append(float((g.abs() > clip_grad_val).double().mean()))
                g = g.clip(-clip_grad_val, clip_grad_val)
            step_clipped.append(g)
            mom = 0.85 if m.momentum else 0.9
            if step == 0:
                b = 0 * g if m.momentum_skip_first else g
            else:
                b = mom * prev_b_arr[grad_idx] + g
            g = b
            prev_b_arr[grad_idx] = b.clone()
            if m.clip_after_momentum:
                g = g.clip(-clip_grad_val, clip_grad_val)
            new_latents.append(l + g + perturbation)
        clipped.append(step_clipped)
        if tied_latents:
            combined = 0.5 * (new_latents[0] + new_latents[1])
            latent_pair = [combined, combined.clone()]
        else:
            latent_pair = new_latents
        if renormalize_latents and not m.no_renormalize:
            latent_pair = [lat * orig_norm / lat.norm().item() for lat in latent_pair]
    return latent_pair, clipped, losses, fraction


def one_step_cond_fn(lam, m):
    """``get_generic_cond_fn``'s ``cond_fn`` with ``one_step_baseline=True``."""
    def cond_fn(x, t):
        with torch.enable_grad():
            l = x.clone().detach().requires_grad_(True)
            if m.grad_through_cfg:
                internal_noise_pred = cfg_noise(l, t, Mut())
            else:
                internal_noise_pred = unet(l, t, "uc")
            alpha_prod_t, beta_prod_t = get_alpha_and_beta(t)
            fac = beta_prod_t if m.fac_no_sqrt else beta_prod_t ** 0.5
            pred_original_sample = (l - fac * internal_noise_pred) / (alpha_prod_t ** 0.5)
            if m.decode_x0:
                sample = pred_original_sample
            else:
                sample = (pred_original_sample * fac) + (l * (1 - fac))
            loss = pixel_loss(vae_decode(sample / VAE_SCALE), lam)
            (grad,) = torch.autograd.grad(loss, l)
        return (1 if m.guidance_sign else -1) * grad
    return cond_fn


def official_baseline(latent, lam, m, single_variable=True):
    """``gen(latent_traversal=False, one_step_baseline=True)``: the chain with ``clip_cond_fn=cond_fn`` (and
    ``MixingLayer`` unless single_variable); returns latent_pair[:1]."""
    cond_fn = one_step_cond_fn(lam, m) if lam else None
    pair = [latent, latent.clone()]
    for i, t in enumerate(TIMESTEPS):
        pair = stepping_layer(i, t, pair, m, cond_fn, single_variable)
        if not single_variable:
            pair = mixing_layer(pair, m)
    return pair[0]


# --- the pack's side --------------------------------------------------------------------------------------------------

MODEL_SIGMAS = sd15_sigmas()
SIGMAS = edict.official_sigmas(MODEL_SIGMAS, STEPS)  # σ(900) … σ(0), then σ(0) again: the identity step
D_CFG = sigma_denoiser(lambda z, t: cfg_noise(z, t, Mut()))
D_U = sigma_denoiser(lambda z, t: unet(z, t, "uc"))


def pack_spec(mode="reversible"):
    return ChainSpec(D_CFG, SIGMAS, p=P, leapfrog=True, official_input_scaling=True, mode=mode)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def pair_rel(a, b):
    return float(torch.cat([u - v for u, v in zip(a, b)]).norm() / torch.cat(list(b)).norm())


X_T, Y_T = _g(1, *SHAPE), _g(2, *SHAPE)
LAM = 1.0


# --- 1. the chain and its gradient ------------------------------------------------------------------------------------

def test_toy_is_in_a_nonlinear_regime():
    """The toy model, decoder and loss are non-linear where the tests evaluate them (not a linear map in disguise)."""
    e1, e2 = cfg_noise(X_T, 900, Mut()), cfg_noise(2 * X_T, 900, Mut())
    assert 0.3 < float(e1.std()) < 3.0
    assert rel(e2, 2 * e1) > 0.1
    ims = vae_decode(official_chain([X_T, Y_T], Mut())[0] / VAE_SCALE)
    assert 0.05 < float(ims.abs().mean()) < 0.9


@pytest.fixture(scope="module")
def reference_gradient():
    return official_grad([X_T, Y_T], LAM, Mut())


@pytest.mark.parametrize("mode", ["reversible", "checkpoint"])
def test_chain_ends_and_gradient_wrt_the_initial_pair_match_the_official(mode, reference_gradient):
    ref_ends = official_chain([X_T, Y_T], Mut())
    xl, yl = X_T.clone().requires_grad_(True), Y_T.clone().requires_grad_(True)
    with torch.enable_grad():
        xo, yo = edict_chain(xl, yl, pack_spec(mode))
    ends = pair_rel([xo.detach(), yo.detach()], ref_ends)
    mean_loss, gx0, gy0 = pair_loss_gradients(decode_loss(LAM))(xo.detach(), yo.detach())
    gx, gy = torch.autograd.grad((xo, yo), (xl, yl), (gx0, gy0))
    ref_grad, ref_sum = reference_gradient
    # the pack's step is −∂L̄/∂(x_T, y_T), L̄ = ½(L_x + L_y); the official's −0.5·∂(L_x + L_y)/∂pair
    grad = pair_rel([-gx, -gy], ref_grad)
    print(f"\nDOODL chain ({mode}): ends rel {ends:.2e}, gradient rel {grad:.2e}, "
          f"loss {abs(mean_loss - ref_sum / 2):.1e}")
    assert ends <= TOL and grad <= TOL
    assert abs(mean_loss - ref_sum / 2) <= TOL * abs(ref_sum)


CHAIN_MUTATIONS = {
    "leapfrog on even steps": Mut(leapfrog_parity=True),
    "mixing: y' from the old x": Mut(mix_old_x=True),
    "mix p 0.93 -> 0.94": Mut(mix_p=True),
    "second sub-step's model at t'": Mut(second_input_at_next=True),
    "t' = t - stride + 1": Mut(prev_off_by_one=True),
    "gradient factor -0.5 -> -1": Mut(grad_factor=True),
    "cfg 7.5 -> 8": Mut(cfg_scale=True),
}


@pytest.mark.parametrize("name", list(CHAIN_MUTATIONS))
def test_chain_mutations_of_the_reference_are_caught(name, reference_gradient):
    xl, yl = X_T.clone().requires_grad_(True), Y_T.clone().requires_grad_(True)
    with torch.enable_grad():
        xo, yo = edict_chain(xl, yl, pack_spec())
    _, gx0, gy0 = pair_loss_gradients(decode_loss(LAM))(xo.detach(), yo.detach())
    gx, gy = torch.autograd.grad((xo, yo), (xl, yl), (gx0, gy0))
    mutated, _ = official_grad([X_T, Y_T], LAM, CHAIN_MUTATIONS[name])
    d = pair_rel([-gx, -gy], mutated)
    print(f"\nDOODL chain mutation {name!r}: gradient rel {d:.2e}")
    assert d > 1000 * TOL


# --- 2. the optimisation loop -----------------------------------------------------------------------------------------

ITERATIONS, PERTURB, SEED = 4, 1e-4, 5


def _clip_value():
    """A clip that the toy's gradients straddle (the median |g| of the official first step): the comparison sees both
    clipped and unclipped elements, so the gradient's values (not only its signs) matter."""
    grad, _ = official_grad([X_T, X_T.clone()], LAM, Mut())
    return float((0.5 * (grad[0] + grad[1])).abs().median())


CLIP = _clip_value()


def run_pack(tie=True, renormalize=True, shared_step=False, perturb=PERTURB, start=(X_T, X_T)):
    cfg = DOODLConfig(iterations=ITERATIONS, lr=1.0, grad_clip=CLIP, momentum=0.9, perturb_std=perturb,
                      tie=tie, shared_step=shared_step, renormalize=renormalize)
    return doodl_optimize(pack_spec(), pair_loss_gradients(decode_loss(LAM)), start[0], start[1], cfg,
                          torch.Generator().manual_seed(SEED))


def run_reference(m=Mut(), tied=True, renormalize=True, perturb=PERTURB, start=(X_T, X_T)):
    return official_traversal([start[0].clone(), start[1].clone()], LAM, ITERATIONS, CLIP, perturb,
                              torch.Generator().manual_seed(SEED), m, tied, renormalize)


def moved_rel(pack_pair, ref_pair, start):
    """The difference of the final pairs relative to how far the reference moved them from the start."""
    moved = torch.cat([r - s for r, s in zip(ref_pair, start)]).norm()
    return float(torch.cat([p - r for p, r in zip(pack_pair, ref_pair)]).norm() / moved)


@pytest.fixture(scope="module")
def generation():
    return run_pack(), run_reference()


def test_generation_loop_matches_the_official_iteration_by_iteration(generation):
    res, (ref_pair, ref_clipped, ref_losses, fraction) = generation
    assert 0.2 < fraction[0] < 0.8, fraction  # the clip is active on part of the elements only
    steps = max(pair_rel(list(s), r) for s, r in zip(res.steps, ref_clipped))
    losses = max(abs(a - b / 2) / abs(b / 2) for a, b in zip(res.losses, ref_losses))
    final = moved_rel([res.x, res.y], ref_pair, (X_T, X_T))
    norm = abs(float(res.x.norm() / X_T.norm()) - 1)
    print(f"\nDOODL loop (tied, renormalised, perturbed, {ITERATIONS} iterations, clip {CLIP:.2e}, "
          f"{fraction[0]:.0%} clipped at it 0): clipped steps rel {steps:.2e}, losses rel {losses:.2e}, "
          f"final pair rel to its motion {final:.2e}")
    assert len(res.steps) == len(ref_clipped) == ITERATIONS and len(res.losses) == ITERATIONS + 1
    assert steps <= TOL and losses <= TOL and final <= TOL and norm <= 1e-12


LOOP_MUTATIONS = {
    "momentum 0.9 -> 0.85": Mut(momentum=True),
    "momentum b_0 = 0": Mut(momentum_skip_first=True),
    "clip after momentum": Mut(clip_after_momentum=True),
    "tie: x entry's gradient only": Mut(tie_first_only=True),
    "no perturbation": Mut(no_perturbation=True),
    "one perturbation per entry": Mut(perturbation_per_entry=True),
    "no renormalisation": Mut(no_renormalize=True),
    "gradient factor -0.5 -> -1": Mut(grad_factor=True),
}


@pytest.mark.parametrize("name", list(LOOP_MUTATIONS))
def test_loop_mutations_of_the_reference_are_caught(name, generation):
    res = generation[0]
    ref_pair = run_reference(LOOP_MUTATIONS[name])[0]
    d = moved_rel([res.x, res.y], ref_pair, (X_T, X_T))
    print(f"\nDOODL loop mutation {name!r}: final pair rel {d:.2e}")
    assert d > 1000 * TOL


def test_editing_loop_separate_steps_match_the_official_and_shared_steps_are_the_documented_difference():
    """Editing an inverted (untied) pair: the official demo runs tied_latents=False, renormalize_latents=False,
    perturb_grad_scale=0. The pack with pair_steps 'separate' is that loop; 'shared' (the node's default for EDICT
    pairs) moves both entries by their mean step, keeping x_T − y_T exactly: the documented difference."""
    start = (X_T, Y_T)
    ref_pair, ref_clipped, _, _ = run_reference(tied=False, renormalize=False, perturb=0.0, start=start)
    sep = run_pack(tie=False, renormalize=False, perturb=0.0, start=start)
    d_sep = moved_rel([sep.x, sep.y], ref_pair, start)
    steps = max(pair_rel(list(s), r) for s, r in zip(sep.steps, ref_clipped))
    shared = run_pack(tie=False, renormalize=False, shared_step=True, perturb=0.0, start=start)
    d_shared = moved_rel([shared.x, shared.y], ref_pair, start)
    kept = float(((shared.x - shared.y) - (X_T - Y_T)).abs().max())
    ref_gap = float(((ref_pair[0] - ref_pair[1]) - (X_T - Y_T)).norm() / (X_T - Y_T).norm())
    print(f"\nDOODL editing loop: separate vs official rel {d_sep:.2e} (steps {steps:.2e}); shared vs official "
          f"{d_shared:.3f} of the motion; shared keeps x_T − y_T to {kept:.1e}, the official moves it by {ref_gap:.2e} "
          f"of its norm")
    assert d_sep <= TOL and steps <= TOL
    assert kept <= 1e-13 and d_shared > 1000 * TOL and ref_gap > 0


# --- 3. the one-step guidance baseline --------------------------------------------------------------------------------

LAM_BASELINE = 30.0  # the paper's λ for CLIP


def pack_baseline(lam, uncond=D_U):
    x = X_T * (1 + SIGMAS[0] ** 2) ** 0.5  # ComfyUI's x at σ_max for the VP latent z_T = noise
    out = one_step_guidance_sample(D_CFG, decode_loss(1.0), x, SIGMAS, lam, uncond_denoiser=uncond)
    return out / (1 + SIGMAS[-1] ** 2) ** 0.5  # back to the VP latent at t = 0


@pytest.fixture(scope="module")
def baseline():
    unguided = official_baseline(X_T, 0.0, Mut())
    ref = official_baseline(X_T, LAM_BASELINE, Mut())
    return unguided, ref, pack_baseline(LAM_BASELINE)


def test_one_step_baseline_matches_the_official(baseline):
    unguided, ref, got = baseline
    motion = float((ref - unguided).norm() / ref.norm())
    d = float((got - ref).norm() / (ref - unguided).norm())
    plain = float((pack_baseline(0.0) - unguided).norm() / unguided.norm())
    print(f"\nDOODL one-step baseline (λ {LAM_BASELINE}): pack vs official rel to the guidance's motion {d:.2e} "
          f"(the guidance moves z_0 by {motion:.2f} of its norm); λ = 0 vs official plain DDIM {plain:.1e}")
    assert motion > 0.05  # the guidance matters on the toy
    assert d <= TOL and plain <= TOL


BASELINE_MUTATIONS = {
    "gradient through the CFG prediction": Mut(grad_through_cfg=True),
    "decode x0_hat instead of fac*x0_hat + (1 - fac)*z": Mut(decode_x0=True),
    "the old pack: CFG prediction, x0_hat decoded": Mut(grad_through_cfg=True, decode_x0=True),
    "fac = 1 - alpha_bar (no sqrt)": Mut(fac_no_sqrt=True),
    "guidance sign": Mut(guidance_sign=True),
    "t' = t - stride + 1": Mut(prev_off_by_one=True),
}


@pytest.mark.parametrize("name", list(BASELINE_MUTATIONS))
def test_baseline_mutations_of_the_reference_are_caught(name, baseline):
    unguided, ref, got = baseline
    mutated = official_baseline(X_T, LAM_BASELINE, BASELINE_MUTATIONS[name])
    d = float((got - mutated).norm() / (ref - unguided).norm())
    print(f"\nDOODL baseline mutation {name!r}: rel {d:.2e}")
    assert d > 1000 * TOL


def test_official_default_edict_baseline_is_the_documented_difference(baseline):
    """``gen``'s default ``single_variable=False`` runs the same guidance inside EDICT's coupled steps (the guidance at
    each of the two sub-steps, then the mixing layer): 2T guided model calls. The pack follows the paper's baseline
    (Table 2: T U-Net calls, standard DDIM classifier guidance), the official ``single_variable=True`` path. Size of the
    difference on the toy, relative to the guidance's motion, for the guided and the unguided (λ = 0) chains."""
    unguided, ref, got = baseline
    edict_guided = official_baseline(X_T, LAM_BASELINE, Mut(), single_variable=False)
    edict_plain = official_baseline(X_T, 0.0, Mut(), single_variable=False)
    d = float((got - edict_guided).norm() / (ref - unguided).norm())
    d_plain = float((unguided - edict_plain).norm() / (ref - unguided).norm())
    d_motion = float(((edict_guided - edict_plain) - (ref - unguided)).norm() / (ref - unguided).norm())
    print(f"\nDOODL baseline, official single_variable=False (EDICT) vs the pack's single chain: final latents "
          f"{d:.3f} of the guidance's motion (unguided chains alone {d_plain:.3f}); the guidance's motions differ "
          f"by {d_motion:.3f}")
    assert d > 1000 * TOL
