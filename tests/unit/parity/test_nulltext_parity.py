"""Null-text inversion parity: the pack's ``optim/stylediffusion.py`` loop with null-text's parameters (and the attn2
patch it trains and plays back through, ``hooks/attention.context_rows``) against an independent float64
transcription of the authors' code.

Official code: google/prompt-to-prompt ``null_text_w_ptp.ipynb``, class ``NullInversion``. The mirror
(/work/.mirror/google+prompt-to-prompt/repo, main at 9c472e4) lists the notebook but lacks its blob, so the text
transcribed here is the copy the StyleDiffusion authors ship with their P2Plus code, sen-mao/StyleDiffusion at
07b388a, ``p2plus/null_text_w_p2plus.py`` (the function is the same in the google notebooks of the mirror's pull
requests, e.g. blob a29b573, apart from a print):

- constants (lines 34–38): ``DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
  clip_sample=False, set_alpha_to_one=False)`` (t_i = 20·(49 − i), final ᾱ = ᾱ_0), ``NUM_DDIM_STEPS = 50``,
  ``GUIDANCE_SCALE = 7.5``; ``invert(…, num_inner_steps=10, early_stop_epsilon=1e-5)`` (567).
- ``prev_step`` / ``next_step`` (426–448): DDIM η = 0, the inversion evaluates the U-Net at the next t on the
  current latent; ``ddim_loop`` (511–520): the cond branch at guidance 1.
- ``null_optimization`` (533–565): ∅ starts as the null prompt's embedding; per step i:
  ``uncond_embeddings = uncond_embeddings.clone().detach()`` (the previous step's result: the warm start),
  ``requires_grad = True``, ``Adam([uncond_embeddings], lr=1e-2 * (1. - i / 100.))``, ``latent_prev =
  latents[len(latents) - i - 2]``, ε_c once at ``latent_cur`` without gradient; inner j < 10: ε_u with ∅ (keys and
  values of the uncond pass), ε = ε_u + 7.5·(ε_c − ε_u), ``loss = mse_loss(prev_step(ε, t, latent_cur),
  latent_prev)``, zero_grad, backward, step, ``if loss_item < epsilon + i * 2e-5: break``; ∅_i = the result
  (``uncond_embeddings[:1].detach()``); ``latent_cur = get_noise_pred(latent_cur, t, False, cat([∅, cond]))``.
- ``text2image_ldm_stable`` (601–657): step i plays ∅_i back as the uncond context of every row.

Toy model: a seeded float64 U-Net-like ε(z, t; context): 3×3 conv + tanh with a timestep embedding, one
cross-attention at the latent's resolution and two at half resolution (2 heads), 3×3 conv out; text [1, 6, 8].
The pack runs in σ-space on its ``official_grid`` of the same ᾱ; compared in z.

Compared (relative difference max|pack − ref| / max|ref|): the pivots, every inner loss, the iteration counts (early
stops), every ∅_i, the reconstruction trajectory (T = 50, the official setting), and a playback of the ∅_i. Tolerance
``TOL`` = 1e-10 relative (float64). Mutations of the reference (the learning-rate coefficient, the early stop one
step late, 9 inner steps, no warm start, ∅ in the keys only) move it > 1000 × TOL from the pack.

Deliberate differences: none in the loop. The learning rate is lr·(1 − lr_decay·i) (0.01·i instead of i / 100.:
≤ 2.2e-15 relative, see test_stylediffusion_parity.py), inside TOL.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invedit.hooks import attention as A
from invedit.optim import stylediffusion as sd
from invedit.samplers.coords import vp_scale

from parity_toys import AttnToyUNet, rel
from tinynets import sd15_alphas_cumprod, sd15_sigmas

F64 = torch.float64
TOL = 1e-10  # relative, float64
CAUGHT = 1000 * TOL
L, D = 6, 8
AB = sd15_alphas_cumprod()


def world(seed=0):
    g = torch.Generator().manual_seed(200 + seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    cond = rnd(1, L, D)
    # scales: losses of 1e-5 … 1e-3, so that the official early stop 1e-5 + 2e-5·i acts
    unet = AttnToyUNet(seed, d=D, in_scale=0.05, attn_out_scale=0.05)
    return dict(unet=unet, z0=rnd(1, 4, 8, 8), cond=cond, null=cond + 0.3 * rnd(1, L, D))


# --- the official code, transcribed --------------------------------------------------------------------------------

def official_timesteps(T):
    return [int(t) for t in (np.arange(0, T) * (1000 // T)).round()[::-1]]


def prev_step(eps, t, sample, T):
    prev_t = t - 1000 // T
    a_t, a_prev = AB[t], (AB[prev_t] if prev_t >= 0 else AB[0])
    x0 = (sample - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def next_step(eps, t, sample, T):
    t, next_t = min(t - 1000 // T, 999), t
    a_t, a_next = (AB[t] if t >= 0 else AB[0]), AB[next_t]
    x0 = (sample - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


def official_null_inversion(w, T, num_inner_steps=10, epsilon=1e-5, lr_coef=1e-2, stop_shift=0, warm=True,
                            keys_only=False):
    """ddim_loop + null_optimization, with planted-mutation switches (all off by default)."""
    unet, cond, null = w["unet"], w["cond"], w["null"]
    ts = official_timesteps(T)
    latent, latents = w["z0"], [w["z0"]]
    with torch.no_grad():
        for i in range(T):
            t = ts[len(ts) - i - 1]
            latent = next_step(unet(latent, t, cond), t, latent, T)
            latents.append(latent)

    def eps_u(latent, t, emb):
        return unet(latent, t, emb, null if keys_only else emb)

    uncond_embeddings, out, losses, iters, traj = null, [], [], [], []
    latent_cur = latents[-1]
    traj.append(latent_cur)
    for i in range(T):
        uncond_embeddings = (uncond_embeddings if warm else null).clone().detach()
        uncond_embeddings.requires_grad = True
        optimizer = torch.optim.Adam([uncond_embeddings], lr=lr_coef * (1. - i / 100.))
        latent_prev = latents[len(latents) - i - 2]
        t = ts[i]
        with torch.no_grad():
            noise_pred_cond = unet(latent_cur, t, cond)
        j = 0
        for j in range(num_inner_steps):
            noise_pred_uncond = eps_u(latent_cur, t, uncond_embeddings)
            noise_pred = noise_pred_uncond + 7.5 * (noise_pred_cond - noise_pred_uncond)
            loss = F.mse_loss(prev_step(noise_pred, t, latent_cur, T), latent_prev)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if loss.item() < epsilon + (i + stop_shift) * 2e-5:
                break
        iters.append(j + 1)
        out.append(uncond_embeddings[:1].detach())
        with torch.no_grad():  # get_noise_pred(latent_cur, t, False, cat([∅, cond])): one batched call
            e = unet(torch.cat([latent_cur] * 2), t, torch.cat([uncond_embeddings, cond]),
                     torch.cat([null if keys_only else uncond_embeddings, cond]))
            e_u, e_c = e.chunk(2)
            latent_cur = prev_step(e_u + 7.5 * (e_c - e_u), t, latent_cur, T)
        traj.append(latent_cur)
    return dict(pivots=latents, null=[e[0] for e in out], losses=losses, iters=iters, traj=traj)


# --- the pack -------------------------------------------------------------------------------------------------------

def pack_null_inversion(w, T, inner=10, epsilon=1e-5):
    """optim.stylediffusion with null-text's settings: ddim_pivots, WarmStart(∅), optimise_steps, ∅_i entering the
    uncond pass through hooks.attention.context_rows: the calls adapters/stylediffusion.ValueInversionSampler makes
    for method "null_text" on a ComfyUI model."""
    unet, cond = w["unet"], w["cond"]
    grid = sd.official_grid(sd15_sigmas(), T)
    ts = sd.leading_timesteps(T)
    state = {"null": None}
    patch = A.context_rows(lambda i: state["null"], lambda eo: eo["step"])
    pivots = sd.ddim_pivots(w["z0"] * vp_scale(grid[-1]), grid,
                            lambda x_in, s_up, j: unet(x_in / vp_scale(s_up), ts[j - 1], cond))
    warm = sd.WarmStart(w["null"][0].clone(), True)
    cache = {}

    def begin(i, x):
        with torch.no_grad():
            cache["e_c"] = unet(x / vp_scale(grid[i]), ts[i], cond)
        return sd.parameters_of(warm.next())

    def predict(x, i):
        state["null"] = warm.trained[i]
        e_u = unet(x / vp_scale(grid[i]), ts[i], w["null"], patch=patch,
                   extra={"cond_or_uncond": [A.UNCOND], "step": i})
        return e_u + 7.5 * (cache["e_c"] - e_u), None

    schedule = sd.Schedule(inner=inner, inner_decay=0.0, stop_eps=epsilon, attn_weight=0.0)
    assert schedule.lr == sd.NULL_TEXT.lr and schedule.lr_decay == sd.NULL_TEXT.lr_decay
    res = sd.optimise_steps(pivots[0], pivots, grid, begin, predict, schedule)
    return dict(pivots=[pivots[T - k] / vp_scale(grid[T - k]) for k in range(T + 1)], losses=res.losses,
                iters=res.iterations, null=[e.detach() for e in warm.trained],
                traj=[x / vp_scale(grid[i]) for i, x in enumerate(res.latents)])


def distance(pack, ref) -> float:
    return max(max(rel(a, b) for a, b in zip(pack["null"], ref["null"])),
               max(rel(a, b) for a, b in zip(pack["traj"], ref["traj"])))


# --- the tests -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run50():
    w = world(0)
    return w, official_null_inversion(w, 50), pack_null_inversion(w, 50)


def test_null_text_inversion_matches_the_official_loop(run50):
    """T = 50, 10 inner steps, lr 1e-2·(1 − i/100), early stop 1e-5 + 2e-5·i, ∅_i warm-started from ∅_{i−1}."""
    _, ref, pack = run50
    assert sd.NULL_TEXT.inner == 10 and [sd.NULL_TEXT.iterations(i) for i in range(50)] == [10] * 50
    assert pack["iters"] == ref["iters"]
    assert any(n < 10 for n in ref["iters"]) and any(n == 10 for n in ref["iters"])  # early stops and full steps
    assert max(rel(a, b) for a, b in zip(pack["pivots"], ref["pivots"])) < TOL
    assert rel(pack["losses"], ref["losses"]) < TOL
    assert distance(pack, ref) < TOL
    # each ∅_i is its own step's: they differ from each other, but for the last step, the identity (σ(0) → σ(0),
    # ᾱ_0 → ᾱ_0 officially), where the loss has no gradient and ∅_{T−1} stays ∅_{T−2}, in both: bit for bit in the
    # pack (its step is 0·ε); to rounding in the reference, whose gradient g·c − ((g·√ᾱ0)/√ᾱ0)·c is exactly 0 only
    # where that round trip is exact (on some inputs and CPUs ~1e-21, which Adam turns into a ~1e-17 move)
    assert all(not torch.equal(a, b) for a, b in zip(pack["null"][:-2], pack["null"][1:-1]))
    assert torch.equal(pack["null"][-1], pack["null"][-2]) and rel(ref["null"][-1], ref["null"][-2]) < TOL


@pytest.fixture(scope="module")
def run10():
    w = world(1)
    return w, official_null_inversion(w, 10), pack_null_inversion(w, 10)


def test_the_short_run_matches_too(run10):
    _, ref, pack = run10
    assert pack["iters"] == ref["iters"] and any(n < 10 for n in ref["iters"])
    assert rel(pack["losses"], ref["losses"]) < TOL and distance(pack, ref) < TOL


MUTATIONS = {
    "lr coefficient 1.1e-2": dict(lr_coef=1.1e-2),
    "early stop one step late (i + 1)": dict(stop_shift=1),
    "9 inner steps": dict(num_inner_steps=9),
    "no warm start": dict(warm=False),
    "∅ in the keys only": dict(keys_only=True),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_of_the_reference_are_caught(run10, name):
    w, _, pack = run10
    mutated = official_null_inversion(w, 10, **MUTATIONS[name])
    assert distance(pack, mutated) > CAUGHT, name


def test_the_playback_of_the_per_step_embeddings_matches_the_official_loop(run10):
    """text2image_ldm_stable with uncond_embeddings: step i's uncond context is ∅_i for every row; the pack's
    context_rows(per_step(∅)) patch on the uncond rows. Rows [caption, another prompt], T = 10."""
    w, ref, _ = run10
    T, unet = 10, w["unet"]
    nulls = torch.stack(ref["null"])
    texts = torch.cat([w["cond"], w["cond"].flip(1)])
    z = ref["pivots"][-1].expand(2, 4, 8, 8)
    for i, t in enumerate(official_timesteps(T)):
        e_u, e_c = unet(z, t, nulls[i].expand(2, L, D)), unet(z, t, texts)
        z = prev_step(e_u + 7.5 * (e_c - e_u), t, z, T)
    grid, ts = sd.official_grid(sd15_sigmas(), T), sd.leading_timesteps(T)
    patch = A.context_rows(A.per_step(nulls), lambda eo: eo["step"])
    x = ref["pivots"][-1].expand(2, 4, 8, 8) * vp_scale(grid[0])
    for i in range(T):
        zi = x / vp_scale(grid[i])
        e_u = unet(zi, ts[i], w["null"].expand(2, L, D), patch=patch, extra={"cond_or_uncond": [A.UNCOND], "step": i})
        e_c = unet(zi, ts[i], texts, patch=patch, extra={"cond_or_uncond": [A.COND], "step": i})
        x = x + (grid[i + 1] - grid[i]) * (e_u + 7.5 * (e_c - e_u))
    assert rel(x / vp_scale(grid[-1]), z) < TOL
    assert rel(ref["traj"][-1], z[:1]) < TOL  # row 0 (the caption) is the inversion's reconstruction
