"""FlowEdit parity: the pack's ``samplers/flowedit.py`` against an independent float64 transcription of the authors'
loop, on seeded non-linear toy velocity fields.

Official code: fallenshock/FlowEdit at 457f40239845d41391ef04d294bb0f1c02525fcf (fetched into
/work/.mirror/fallenshock+FlowEdit), ``FlowEdit_utils.py``, ``FlowEditSD3`` (lines 112–229; ``FlowEditFLUX``,
232–, is the same loop on packed latents with guidance embedding): ``zt_edit = x_src.clone()``; for each (i, t):
``if T_steps − i > n_max: continue``; ``t_i = t/1000``, ``t_im1`` the next timestep/1000 or 0; if ``T_steps − i >
n_min``: for k < n_avg: ``fwd_noise = randn_like(x_src)``, ``zt_src = (1 − t_i)·x_src + t_i·fwd_noise``, ``zt_tar =
zt_edit + zt_src − x_src``, the source and target CFG velocities (``calc_v_sd3``: one batch [src uncond, src cond,
tar uncond, tar cond] at (zt_src, zt_src, zt_tar, zt_tar)), ``V_delta_avg += (1/n_avg)·(Vt_tar − Vt_src)``; then
``zt_edit = zt_edit + (t_im1 − t_i)·V_delta_avg``. Else (the last n_min steps): at ``i == T_steps − n_min`` a fresh
noise, ``xt_src = scale_noise(x_src, t, noise)`` (= σ·noise + (1 − σ)·x_src, lines 11–36), ``xt_tar = zt_edit +
xt_src − x_src``; then ``xt_tar = xt_tar + (t_im1 − t_i)·Vt_tar``. Returns ``zt_edit`` if n_min = 0 else ``xt_tar``.
SD3_exp.yaml: T_steps 50, n_avg 1, CFG 3.5 / 13.5, n_min 0, n_max 33.

The transcription draws its noise from the same seeded stream in the same order as the pack (the official code draws
from the global RNG in that order). Tolerance ``TOL`` = 1e-12 relative (float64; measured worst 3.6e-16). Planted
mutations (Z_tar without − x_src, the velocity difference reversed, the window off by one, n_avg's 1/n dropped, the
n_min phase started from Z_edit without the noised offset) must move it > 1000 × TOL.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from invedit.samplers import flowedit

F64 = torch.float64
TOL = 1e-12
CAUGHT = 1000 * TOL

_g = torch.Generator().manual_seed(31)
W = {k: torch.randn(8, 4, 3, 3, generator=_g, dtype=F64) * 0.3 for k in ("src", "tar")}
V = {k: torch.randn(4, 8, 3, 3, generator=_g, dtype=F64) * 0.3 for k in ("src", "tar")}
X_SRC = torch.randn(1, 4, 8, 8, generator=_g, dtype=F64)


def field(which):
    def v(x, t):
        h = torch.tanh(torch.nn.functional.conv2d(x, W[which], padding=1) + float(t))
        return torch.nn.functional.conv2d(h, V[which], padding=1) - 0.5 * x
    return v


V_SRC, V_TAR = field("src"), field("tar")


@dataclass(frozen=True)
class Mut:
    no_minus_src: bool = False
    reversed_delta: bool = False
    window_off: bool = False
    no_avg_divide: bool = False
    nmin_from_edit: bool = False


NONE = Mut()
MUTATIONS = {
    "Z_tar without - x_src": Mut(no_minus_src=True),
    "velocity difference reversed": Mut(reversed_delta=True),
    "window off by one": Mut(window_off=True),
    "n_avg's 1/n dropped": Mut(no_avg_divide=True),
    "n_min phase from Z_edit": Mut(nmin_from_edit=True),
}


def official(x_src, timesteps, n_min, n_max, n_avg, gen, mut=NONE):
    """FlowEditSD3's loop; ``timesteps`` = σ·1000 descending (no final 0, as retrieve_timesteps gives them)."""
    T_steps = len(timesteps)
    zt_edit = x_src.clone()
    xt_tar = None
    for i, t in enumerate(timesteps):
        if T_steps - i > n_max - (1 if mut.window_off else 0):
            continue
        t_i = t / 1000
        t_im1 = timesteps[i + 1] / 1000 if i + 1 < len(timesteps) else 0.0
        if T_steps - i > n_min:
            V_delta_avg = torch.zeros_like(x_src)
            for _ in range(n_avg):
                fwd_noise = torch.randn(x_src.shape, generator=gen, dtype=F64)
                zt_src = (1 - t_i) * x_src + t_i * fwd_noise
                zt_tar = zt_edit + zt_src - (0 if mut.no_minus_src else x_src)
                Vt_src, Vt_tar = V_SRC(zt_src, t_i), V_TAR(zt_tar, t_i)
                d = (Vt_src - Vt_tar) if mut.reversed_delta else (Vt_tar - Vt_src)
                V_delta_avg += (1.0 if mut.no_avg_divide else 1 / n_avg) * d
            zt_edit = zt_edit + (t_im1 - t_i) * V_delta_avg
        else:
            if i == T_steps - n_min:
                fwd_noise = torch.randn(x_src.shape, generator=gen, dtype=F64)
                xt_src = t_i * fwd_noise + (1.0 - t_i) * x_src
                xt_tar = zt_edit if mut.nmin_from_edit else zt_edit + xt_src - x_src
            xt_tar = xt_tar + (t_im1 - t_i) * V_TAR(xt_tar, t_i)
    return zt_edit if n_min == 0 else xt_tar


def sigmas(n, shift=3.0):
    u = torch.linspace(1.0, 0.0, n + 1, dtype=F64)
    return shift * u / (1 + (shift - 1) * u)


def pack(n, n_min, n_max, n_avg, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return flowedit.flowedit(V_SRC, V_TAR, X_SRC, sigmas(n), n_min, n_max, n_avg,
                             lambda: torch.randn(X_SRC.shape, generator=gen, dtype=F64))


def ref(n, n_min, n_max, n_avg, seed=5, mut=NONE):
    ts = [float(s) * 1000 for s in sigmas(n)[:-1]]
    return official(X_SRC, ts, n_min, n_max, n_avg, torch.Generator().manual_seed(seed), mut)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


CASES = [(50, 0, 33, 1), (28, 0, 24, 1), (20, 3, 15, 2), (10, 0, 10, 3)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_the_official_loop(case):
    r = ref(*case)
    assert rel(r, X_SRC) > 0.05  # the edit moved the latent
    assert rel(pack(*case), r) <= TOL


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_are_caught(name):
    worst = max(rel(pack(*c), ref(*c, mut=MUTATIONS[name])) for c in ((20, 3, 15, 2), (50, 0, 33, 1)))
    assert worst > CAUGHT, (name, worst)


def test_the_same_velocity_for_source_and_target_leaves_the_image_unchanged():
    gen = torch.Generator().manual_seed(0)
    out = flowedit.flowedit(V_SRC, V_SRC, X_SRC, sigmas(20), 0, 15, 1,
                            lambda: torch.randn(X_SRC.shape, generator=gen, dtype=F64))
    assert rel(out, X_SRC) <= 1e-13  # float rounding of Z_edit + Z_src − x_src only


@pytest.mark.parametrize("bad,match", [((10, 0, 0, 1), "leaves no step"), ((10, 5, 3, 1), "n_min <= n_max"),
                                       ((10, 0, 5, 0), "n_avg")])
def test_bad_windows_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        flowedit.check_window(*bad)
