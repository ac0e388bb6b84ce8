"""StyleDiffusion parity: the pack's ``optim/stylediffusion.py`` (with the attention hooks it trains and plays back
through, ``hooks/attention.value_film`` and ``map_loss``) against an independent float64 transcription of the
authors' code.

Official code: sen-mao/StyleDiffusion at 07b388a (mirror /work/.mirror/sen-mao+StyleDiffusion/repo),
``stylediffusion.py``:

- constants (lines 26–36): ``DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
  clip_sample=False, set_alpha_to_one=False)`` (steps_offset 0: t_i = (1000 // T)·(T − 1 − i), final ᾱ = ᾱ_0),
  ``NUM_DDIM_STEPS = 30``, ``GUIDANCE_SCALE = 7.5``, ``BLOCK_NUM = 1``.
- ``Trainer.__init__`` (549–579): per step a ``nn.ModuleDict({'conv_start': Conv1d(197, 154, 1), 'conv_block':
  Sequential(deepcopy(Sequential(Conv1d(154, 154, 1), BatchNorm1d(154), LeakyReLU()))), 'conv_end': Conv1d(154,
  154, 1)}).train()`` (PyTorch's default init; BatchNorm always on batch statistics).
- ``Trainer.forward_embed`` (609–614): img_emb = the CLIP tokens through the step's blocks in order;
  ``context * img_emb[:, :77, :] + img_emb[:, 77:, :]``.
- ``register_attention_control`` (440–500): training: ``k = to_k(context)`` first, then for the cond branch's cross
  attention ``context = trainer.forward_embed(context)``, ``v = to_v(context)`` (the keys keep the text); editing: the
  cond rows of the batch [source, target]: row 0 with ``trainer.I`` (always its step), row 1 with ``trainer.i``; the
  uncond branch never.
- ``VaeInversion.prev_step`` / ``next_step`` (625–648): DDIM η = 0 with ᾱ_prev = ᾱ[t − 1000 // T] or the final ᾱ;
  the inversion evaluates the U-Net at the next (noisier) t on the current latent.
- ``VaeInversion.ddim_loop`` (712–748): cond branch at guidance 1, ``t = timesteps[T − i − 1]``; the 16² maps of
  ``down_cross`` / ``up_cross`` per step appended to ``ddim_inv_attn`` (A*(0) … A*(T − 1)), then the last appended
  again (``self.ddim_inv_attn += [self.ddim_inv_attn[-1]]``). (The running sum it also builds, lines 738–744, adds
  into A*(0)'s tensors in place; no step reads index 0.)
- ``VaeInversion.optimization`` (761–840): ``NUM_INNER_STEPS = np.ceil(num_inner_steps * np.exp(-.1 * x))`` with
  ``x = np.linspace(0, T − 1, T)``; per step i: ``copy_params_and_buffers(embedding[i-1], embedding[i])`` (warm start,
  i > 0), ``Adam(embedding_i.parameters(), lr=1e-2 * (1. - i / 100.))``, ``latent_prev = latents[len(latents) - i -
  2]``, ε_u once at ``latent_cur`` without gradient; inner j: ε_c with the mapper, ε = ε_u + 7.5·(ε_c − ε_u),
  ``latent_loss = mse_loss(prev_step(ε, t, latent_cur), latent_prev)``, ``attn_loss = Σ mse_loss(attn_gt, attn)`` over
  the 16² maps against ``self.ddim_inv_attn[NUM_DDIM_STEPS - i]``, ``loss = latent_loss + attn_loss``, zero_grad,
  backward, step, ``if loss_item < epsilon + i * 2e-5: break``; then ``latent_cur = get_noise_pred(latent_cur, t,
  False, …)`` with the trained mapper.
- ``text2image_ldm_stable`` (891–938): ``trainer.i = i if i < NUM_DDIM_STEPS * trainer.v_replace_steps else None``
  (line 924–925: τ_v's gate, a float comparison), ``trainer.I = i``; ``ptp_utils_v.diffusion_step`` (low_resource):
  ε_u with ``controller.uncond = True``, ε_c of the batch, CFG, ``scheduler.step`` (DDIM η = 0).

Toy model: a seeded float64 U-Net-like ε(z, t; c_k, c_v): 3×3 conv + tanh with a timestep embedding, one
cross-attention at the latent's resolution and two at half resolution (the "16²" layers whose maps the loss uses;
2 heads each), 3×3 conv out. Image tokens [1, 5, 8], text [1, 6, 8], T = 6 (t = 830 … 0) for training, T = 50 for
the τ_v gate. The pack runs in σ-space (x = z·√(1+σ²), the pack's ``official_grid`` of the same ᾱ); compared in z.

Compared (relative difference max|pack − ref| / max|ref|): the pivots, every inner loss, the iteration counts (early
stop), every step's mapper output (A_i, B_i), the reconstruction trajectory, the K_i schedule, the edit's latents
under τ_v. Tolerance ``TOL`` = 1e-10 relative (float64). Mutations of the reference (the learning-rate coefficient,
the early stop one step late, the schedule's exponent, the map target one step off, no warm start, the FiLM on the
keys too, τ_v's gate as ⌈τ_v·T − 1e-9⌉ (the pack before issue 24)) move it > 1000 × TOL from the pack.

Deliberate differences shown with their size: ``init="identity"`` (the pack's default: A = 1, B = 0 at the first
step) against PyTorch's default init (``init="official"``, the authors'), and the learning rate lr·(1 − lr_decay·i)
(a configurable decay: 0.01·i instead of i / 100., ≤ 2.2e-15 relative).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invedit.hooks import attention as A
from invedit.optim import stylediffusion as sd
from invedit.samplers.coords import vp_scale

from parity_toys import AttnToyUNet, rel
from tinynets import sd15_alphas_cumprod, sd15_sigmas

F64 = torch.float64
TOL = 1e-10  # relative, float64
CAUGHT = 1000 * TOL
L, D, N_IMG = 6, 8, 5  # text tokens, context width (= the image tokens' width: no projection), image tokens
AB = sd15_alphas_cumprod()


def world(seed=0):
    """The toy, a clean latent z_0, the caption's and the null prompt's embeddings, the image's tokens."""
    g = torch.Generator().manual_seed(100 + seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    z0, cond = rnd(1, 4, 8, 8), rnd(1, L, D)
    # the toy returns (ε, the maps of its two half-resolution layers: the map loss's "16²" layers); scales: losses of
    # 1e-5 … 2e-4 (the official early stop 1e-5 + 2e-5·i then acts), values that matter
    unet = AttnToyUNet(seed, d=D, in_scale=0.01, attn_out_scale=0.02, maps=True, pool_twice=True)
    return dict(unet=unet, z0=z0, cond=cond, uncond=cond + 0.01 * rnd(1, L, D), tokens=rnd(1, N_IMG, D))


# --- the official code, transcribed --------------------------------------------------------------------------------

def official_timesteps(T):
    """DDIMScheduler.set_timesteps (steps_offset 0): (arange(0, T) · (1000 // T)).round()[::-1]."""
    return [int(t) for t in (np.arange(0, T) * (1000 // T)).round()[::-1]]


def prev_step(eps, t, sample, T):
    prev_t = t - 1000 // T
    a_t = AB[t]
    a_prev = AB[prev_t] if prev_t >= 0 else AB[0]  # final_alpha_cumprod (set_alpha_to_one=False)
    x0 = (sample - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def next_step(eps, t, sample, T):
    t, next_t = min(t - 1000 // T, 999), t
    a_t = AB[t] if t >= 0 else AB[0]
    a_next = AB[next_t]
    x0 = (sample - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


def official_embedding(seed, init="official"):
    """Trainer.__init__'s ModuleDict for one step (BLOCK_NUM = 1), at 2L channels over N_IMG tokens, float64, with
    PyTorch's default init (``official``) or, for the runs that start where the pack's default starts, conv_end
    zeroed with bias [1 … 1 | 0 … 0] (``identity``: A = 1, B = 0; the official loop from that starting point)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        convblock = nn.Sequential(nn.Conv1d(2 * L, 2 * L, 1), nn.BatchNorm1d(2 * L, affine=True), nn.LeakyReLU())
        emb = nn.ModuleDict({"conv_start": nn.Conv1d(N_IMG, 2 * L, 1),
                             "conv_block": nn.Sequential(*[copy.deepcopy(convblock) for _ in range(1)]),
                             "conv_end": nn.Conv1d(2 * L, 2 * L, 1)}).train().double()
    if init == "identity":
        with torch.no_grad():
            emb["conv_end"].weight.zero_()
            emb["conv_end"].bias.copy_(torch.cat([torch.ones(L), torch.zeros(L)]))
    return emb


def mapper_out(embedding, tokens):
    """(A, B) of one step: the blocks' output split as forward_embed splits it."""
    img = tokens
    for block in embedding.values():
        img = block(img)
    return img[0, :L], img[0, L:]


def forward_embed(embedding, tokens, context):
    img = tokens
    for block in embedding.values():
        img = block(img)
    return context * img[:, :L, :] + img[:, L:, :]


def copy_params_and_buffers(src, dst):
    tensors = dict(list(src.named_parameters()) + list(src.named_buffers()))
    with torch.no_grad():
        for name, tensor in list(dst.named_parameters()) + list(dst.named_buffers()):
            tensor.copy_(tensors[name].detach())


def official_ddim_loop(w, T):
    """VaeInversion.ddim_loop: the latents A(0) … and the 16² maps of every inversion step, the last one twice."""
    ts = official_timesteps(T)
    latent, latents, maps = w["z0"], [w["z0"]], []
    with torch.no_grad():
        for i in range(T):
            t = ts[len(ts) - i - 1]
            eps, m = w["unet"](latent, t, w["cond"])
            latent = next_step(eps, t, latent, T)
            latents.append(latent)
            maps.append(m)
    maps.append(maps[-1])
    return latents, maps


def official_optimization(w, T, K, epsilon, seed=0, init="official", lr_coef=1e-2, stop_shift=0, exponent=-.1,
                          target_shift=0, warm=True, film_keys=False, guidance=7.5, w_attnloss=True):
    """VaeInversion.optimization (epoch 1) with its planted-mutation switches (all off by default)."""
    latents, inv_attn = official_ddim_loop(w, T)
    ts = official_timesteps(T)
    embedding = [official_embedding(seed + 1000 * k) for k in range(T)]
    embedding[0] = official_embedding(seed, init)
    x = np.linspace(0, T - 1, T)
    inner = np.ceil(K * np.exp(exponent * x))
    latent_cur = latents[-1]
    losses, iters, ab, traj = [], [], [], [latent_cur]
    unet, cond, uncond, tokens = w["unet"], w["cond"], w["uncond"], w["tokens"]

    def cond_eps(emb, latent, t):
        v = forward_embed(emb, tokens, cond)
        return unet(latent, t, v if film_keys else cond, v)

    for i in range(T):
        n_inner = int(inner[i])
        if i > 0 and warm:
            copy_params_and_buffers(embedding[i - 1], embedding[i])
        emb = embedding[i]
        opt = torch.optim.Adam(emb.parameters(), lr=lr_coef * (1. - i / 100.))
        latent_prev = latents[len(latents) - i - 2]
        t = ts[i]
        with torch.no_grad():
            e_u, _ = unet(latent_cur, t, uncond)
        j = 0
        for j in range(n_inner):
            e_c, maps = cond_eps(emb, latent_cur, t)
            rec = prev_step(e_u + guidance * (e_c - e_u), t, latent_cur, T)
            loss = F.mse_loss(rec, latent_prev)
            attn_loss = torch.tensor(0.0, dtype=F64)
            for gt, a in zip(inv_attn[min(T - i + target_shift, T)], maps):
                attn_loss = attn_loss + F.mse_loss(gt, a)
            if w_attnloss:
                loss = loss + attn_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if loss.item() < epsilon + (i + stop_shift) * 2e-5:
                break
        iters.append(j + 1)
        with torch.no_grad():
            e_u, _ = unet(latent_cur, t, uncond)
            e_c, _ = cond_eps(emb, latent_cur, t)
            latent_cur = prev_step(e_u + guidance * (e_c - e_u), t, latent_cur, T)
            traj.append(latent_cur)
            ab.append(mapper_out(emb, tokens))
    return dict(pivots=latents, losses=losses, iters=iters, ab=ab, traj=traj)


# --- the pack, through its own functions ---------------------------------------------------------------------------

def pack_inversion(w, T, K, epsilon, seed=0, init="official", warm=True, guidance=7.5):
    """optim.stylediffusion on the toy: ddim_pivots, ValueMapper + WarmStart, optimise_steps with the value FiLM as
    the attn2 patch (hooks.attention.value_film, the cond rows) and map_loss against map_target's maps: the calls
    adapters/stylediffusion.ValueInversionSampler makes on a ComfyUI model."""
    unet, cond, uncond, tokens = w["unet"], w["cond"], w["uncond"], w["tokens"]
    grid = sd.official_grid(sd15_sigmas(), T)
    ts = sd.leading_timesteps(T)
    state = {"values": None}
    film = A.value_film(lambda i: state["values"], lambda eo: eo["step"])
    targets = {}

    def eps_inv(x_in, s_up, j):
        e, maps = unet(x_in / vp_scale(s_up), ts[j - 1], cond)
        targets[j] = maps
        return e

    pivots = sd.ddim_pivots(w["z0"] * vp_scale(grid[-1]), grid, eps_inv)
    template = sd.ValueMapper(N_IMG, D, D, length=L, init=init).double()
    a0, b0 = template(tokens)
    # the reference's draw (the pack draws its own, from its seed in another module order)
    template.load_state_dict(official_embedding(seed, init).state_dict())
    if init == "identity":  # still exactly A = 1, B = 0
        assert torch.equal(a0, torch.ones_like(a0)) and torch.equal(b0, torch.zeros_like(b0))
        assert all(torch.equal(x, y) for x, y in zip(template(tokens), (a0, b0)))
    warm_start = sd.WarmStart(template, warm)
    cache = {}

    def eps_cond(x, i, values):
        state["values"] = values
        return unet(x / vp_scale(grid[i]), ts[i], cond, patch=film, extra={"cond_or_uncond": [A.COND], "step": i})

    def begin(i, x):
        with torch.no_grad():
            cache["e_u"], _ = unet(x / vp_scale(grid[i]), ts[i], uncond)
        return sd.parameters_of(warm_start.next())

    def predict(x, i):
        e_c, maps = eps_cond(x, i, warm_start.trained[i](tokens))
        return cache["e_u"] + guidance * (e_c - cache["e_u"]), maps

    def map_loss(maps, i):
        return A.map_loss(list(enumerate(maps)), list(enumerate(targets[sd.map_target(i)])))

    schedule = sd.Schedule(inner=K, stop_eps=epsilon, guidance=guidance)
    res = sd.optimise_steps(pivots[0], pivots, grid, begin, predict, schedule, map_loss)
    with torch.no_grad():
        ab = [m(tokens) for m in warm_start.trained]
    return dict(pivots=[pivots[T - k] / vp_scale(grid[T - k]) for k in range(T + 1)], losses=res.losses,
                iters=res.iterations, ab=ab, traj=[x / vp_scale(grid[i]) for i, x in enumerate(res.latents)],
                grid=grid)


def official_edit(w, T, scale, shift, tau_v, x_T, texts, gate=None, source_gated=False):
    """text2image_ldm_stable + diffusion_step (low_resource) + the editing branch of register_attention_control,
    without an attention controller: rows [source, target]; the uncond pass never mapped; the cond pass maps row 0
    with trainer.I = i and row 1 with trainer.i = i if i < NUM_DDIM_STEPS · v_replace_steps else None. Planted
    mutations: ``gate`` replaces that comparison, ``source_gated`` gates row 0 as row 1."""
    ts = official_timesteps(T)
    unet = w["unet"]
    latents = x_T.expand(2, *x_T.shape[1:]).clone()
    uncond = w["uncond"].expand(2, L, D)
    for i, t in enumerate(ts):
        on = (i < T * tau_v) if gate is None else gate(i)
        ti = i if on else None
        e_u, _ = unet(latents, t, uncond)
        si = ti if source_gated else i
        rows = [texts[0] * scale[si] + shift[si] if si is not None else texts[0],   # row 0: trainer.I = i
                texts[1] * scale[ti] + shift[ti] if ti is not None else texts[1]]   # row 1: trainer.i
        e_c, _ = unet(latents, t, texts, torch.stack(rows))
        latents = prev_step(e_u + 7.5 * (e_c - e_u), t, latents, T)                 # scheduler.step, η = 0
    return latents


def pack_edit(w, T, scale, shift, tau_v, x_T, texts):
    """The playback adapters/stylediffusion.edit installs: hooks.attention.value_film(baked(A, B)) on the cond rows,
    active for row 0 always and for row 1 while i < optim.stylediffusion.value_steps(T, τ_v); DDIM as the σ-space
    Euler step on the pack's grid."""
    grid = sd.official_grid(sd15_sigmas(), T)
    ts = sd.leading_timesteps(T)
    n = sd.value_steps(T, tau_v)
    film = A.value_film(A.baked(scale, shift), lambda eo: eo["step"], active=lambda i, row: row == 0 or i < n)
    unet = w["unet"]
    x = x_T.expand(2, *x_T.shape[1:]).clone() * vp_scale(grid[0])
    uncond = w["uncond"].expand(2, L, D)
    for i in range(T):
        z = x / vp_scale(grid[i])
        e_u, _ = unet(z, ts[i], uncond, patch=film, extra={"cond_or_uncond": [A.UNCOND], "step": i})
        e_c, _ = unet(z, ts[i], texts, patch=film, extra={"cond_or_uncond": [A.COND], "step": i})
        x = x + (grid[i + 1] - grid[i]) * (e_u + 7.5 * (e_c - e_u))
    return x / vp_scale(grid[-1])


# --- the tests -----------------------------------------------------------------------------------------------------

def test_the_inner_schedule_is_the_official_numpy_expression():
    """K_i = np.ceil(K · np.exp(−.1 · np.linspace(0, T − 1, T))) for every T ≤ 60 and K of 1 … 300 (the official
    hard-codes the decay 0.1); Σ = 1015 for the defaults (K 100, T 30); the exponent −0.11 (a planted mutation)
    changes the list; null-text's schedule (decay 0) is 10 every step."""
    for K in (1, 7, 10, 12, 50, 100, 137, 300):
        for T in range(1, 61):
            ref = np.ceil(K * np.exp(-.1 * np.linspace(0, T - 1, T))).astype(int).tolist()
            assert [sd.Schedule(inner=K).iterations(i) for i in range(T)] == ref, (K, T)
    pack = [sd.Schedule().iterations(i) for i in range(30)]
    assert sum(pack) == 1015 == int(np.sum(np.ceil(100 * np.exp(-.1 * np.linspace(0, 29, 30)))))
    mutated = np.ceil(100 * np.exp(-.11 * np.linspace(0, 29, 30))).astype(int).tolist()
    assert mutated != pack and sum(mutated) < 1015
    assert [sd.NULL_TEXT.iterations(i) for i in range(50)] == [10] * 50


def test_the_learning_rate_is_the_official_to_rounding_and_the_early_stop_is_its_comparison():
    """lr·(1 − lr_decay·i) with lr = lr_decay = 0.01 against 1e-2 · (1. − i / 100.): the documented rounding-level
    difference (0.01·i and i/100. differ in the last bit for some i); the stop is loss < ε + i·2e-5 exactly."""
    s = sd.Schedule()
    diffs = [abs(s.lr_at(i) - 1e-2 * (1. - i / 100.)) / (1e-2 * (1. - i / 100.)) for i in range(100)]
    assert max(diffs) < 3e-15 and sum(d > 0 for d in diffs) > 0
    for i in range(60):
        for loss in (1e-5 + i * 2e-5, np.nextafter(1e-5 + i * 2e-5, 0), 3e-4):
            assert s.stop(float(loss), i) == (float(loss) < 1e-5 + i * 2e-5)


@pytest.fixture(scope="module")
def runs():
    w = world(0)
    out = {}
    for init in ("identity", "official"):
        out[init] = (official_optimization(w, 6, 12, 1e-5, init=init), pack_inversion(w, 6, 12, 1e-5, init=init))
    return w, out


def distance(pack, ref) -> float:
    """The largest relative difference of every step's (A_i, B_i) and every latent of the reconstruction."""
    ab = max(max(rel(a, b) for a, b in zip(p, r)) for p, r in zip(pack["ab"], ref["ab"]))
    return max(ab, max(rel(a, b) for a, b in zip(pack["traj"], ref["traj"])))


@pytest.mark.parametrize("init", ["identity", "official"])
def test_the_inversion_matches_the_official_loop(runs, init):
    """Pivots, every inner loss, the iteration counts (early stops included), every step's mapper output and the
    reconstruction trajectory, from the pack's default start (A = 1, B = 0) and from PyTorch's default init."""
    _, out = runs
    ref, pack = out[init]
    schedule = [sd.Schedule(inner=12).iterations(i) for i in range(6)]
    assert pack["iters"] == ref["iters"]
    assert any(n < k for n, k in zip(ref["iters"], schedule)) and any(n > 1 for n in ref["iters"])  # early stops
    if init == "official":
        assert any(n == k for n, k in zip(ref["iters"], schedule))  # and steps that run their K_i
    assert max(rel(a, b) for a, b in zip(pack["pivots"], ref["pivots"])) < TOL
    assert rel(pack["losses"], ref["losses"]) < TOL
    assert distance(pack, ref) < TOL


MUTATIONS = {  # planted in the reference: (its start, the switch)
    "lr coefficient 1.1e-2": ("identity", dict(lr_coef=1.1e-2)),
    "early stop one step late (i + 1)": ("identity", dict(stop_shift=1)),
    "early stop one step early (i − 1)": ("identity", dict(stop_shift=-1)),
    "schedule exponent −0.11": ("official", dict(exponent=-.11)),
    "map target one step off": ("identity", dict(target_shift=-1)),
    "no warm start": ("identity", dict(warm=False)),
    "FiLM on the keys too": ("official", dict(film_keys=True)),
    "no attention loss": ("identity", dict(w_attnloss=False)),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_of_the_reference_are_caught(runs, name):
    w, out = runs
    init, switch = MUTATIONS[name]
    mutated = official_optimization(w, 6, 12, 1e-5, init=init, **switch)
    assert distance(out[init][1], mutated) > CAUGHT, name


def test_the_identity_start_is_the_documented_difference_from_the_official_init(runs):
    """init="identity" (the pack's default) starts at A = 1, B = 0 exactly; the official init (PyTorch's default,
    the pack's init="official": the same modules, names and draws' distribution) starts elsewhere, and the whole
    inversion differs by its size."""
    w, out = runs
    tokens = w["tokens"]
    with torch.no_grad():
        a0, b0 = mapper_out(official_embedding(0), tokens)
    assert float((a0 - 1).abs().max()) > 0.1 and float(b0.abs().max()) > 0.1
    own = sd.ValueMapper(N_IMG, D, D, length=L, init="official").double()
    ref = official_embedding(0)
    assert {k: v.shape for k, v in own.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    for m in own.modules():  # PyTorch's default Conv1d init: weight and bias within ±1/√fan_in, not all zero
        if isinstance(m, nn.Conv1d):
            bound = 1 / math.sqrt(m.in_channels * m.kernel_size[0])
            w_, b_ = float(m.weight.detach().abs().max()), float(m.bias.detach().abs().max())
            assert 0 < w_ <= bound and 0 < b_ <= bound
    size = distance(out["identity"][1], out["official"][0])
    assert size > 0.1, size  # not a rounding matter: the start point of the optimisation


def test_tau_v_counts_the_steps_as_the_official_float_comparison():
    """Issue 24, item 13: the steps i < T·τ_v (``trainer.i = i if i < NUM_DDIM_STEPS * trainer.v_replace_steps``)
    for T = 1 … 100 and τ_v = k/100; the pack's old ⌈τ_v·T − 1e-9⌉ differed in 13 of these 10 100 pairs."""
    old_rule, differ = [], []
    for T in range(1, 101):
        for k in range(101):
            tau = k / 100
            official = sum(1 for i in range(T) if i < T * tau)
            assert sd.value_steps(T, tau) == official, (T, tau)
            if min(T, math.ceil(tau * T - 1e-9)) != official:
                differ.append((T, tau))
    assert len(differ) == 13 and (50, 0.14) in differ and (25, 0.28) in differ
    assert sd.value_steps(50, 0.14) == 8 and 50 * 0.14 > 7
    assert sd.value_steps(30, 0.6) == 18 and sd.value_steps(30, 1.0) == 30 and sd.value_steps(30, 0.0) == 0


@pytest.mark.parametrize("T,tau_v", [(50, 0.14), (30, 0.6), (25, 0.28), (12, 1.0), (12, 0.0)])
def test_the_value_injection_under_tau_v_matches_the_official_edit_loop(T, tau_v):
    w = world(1)
    g = torch.Generator().manual_seed(7)
    scale = 1 + 0.3 * torch.randn(T, L, D, generator=g, dtype=F64)
    shift = 0.3 * torch.randn(T, L, D, generator=g, dtype=F64)
    texts = torch.cat([w["cond"], w["cond"] + 0.3 * torch.randn(1, L, D, generator=g, dtype=F64)])
    x_T = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    ref = official_edit(w, T, scale, shift, tau_v, x_T, texts)
    pack = pack_edit(w, T, scale, shift, tau_v, x_T, texts)
    assert rel(pack, ref) < TOL
    if (T, tau_v) in ((50, 0.14), (25, 0.28)):  # the pack's old gate: one step fewer on the target row
        old = official_edit(w, T, scale, shift, tau_v, x_T, texts, gate=lambda i: i < math.ceil(tau_v * T - 1e-9))
        assert rel(pack[1], old[1]) > CAUGHT and rel(pack[0], old[0]) < TOL
    if 0 < tau_v < 1:  # the source row gated too
        both = official_edit(w, T, scale, shift, tau_v, x_T, texts, source_gated=True)
        assert rel(pack[0], both[0]) > CAUGHT and rel(pack[1], both[1]) < TOL
