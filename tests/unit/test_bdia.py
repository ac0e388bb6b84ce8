"""BDIA (samplers/bdia.py): the step and its exact inverse, whole-chain round trips on VP and flow models, one model
call a step, γ = 0 is DDIM, the growth of the inversion's second mode and its warning / refusal."""
import logging

import pytest
import torch

from invedit.samplers import bdia, ddim, edict

from tinynets import F64, CFGEps, flow_denoiser, flow_sigmas, sd15_sigmas, sigma_denoiser

VP_DEN = sigma_denoiser(CFGEps(g=5.0))
FLOW_DEN = flow_denoiser(CFGEps(g=5.0, out=0.3))


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def maxabs(a, b):
    return float((a - b).abs().max())


def vp_sigmas(steps, strength=1.0):
    return edict.official_sigmas(sd15_sigmas(), steps, strength)


class Counted:
    def __init__(self, den):
        self.den, self.calls = den, 0

    def __call__(self, x, s):
        self.calls += 1
        return self.den(x, s)


@pytest.mark.parametrize("coords,den,sig", [(edict.VP, VP_DEN, vp_sigmas(10)), (edict.FLOW, FLOW_DEN, flow_sigmas(10))],
                         ids=["vp", "flow"])
def test_one_step_and_its_inverse(coords, den, sig):
    eps = edict.EpsFromDenoiser(den, None, coords)
    z_prev, z = rand(1, 4, 8, 8, seed=1), rand(1, 4, 8, 8, seed=2)
    i = 4
    d = eps(z, sig[i], sig[i])
    z_next = bdia.bdia_step(coords, z_prev, z, d, sig, i, 0.5)
    assert maxabs(z_next, z) > 1e-2
    assert maxabs(bdia.bdia_step_inverse(coords, z, z_next, d, sig, i, 0.5), z_prev) <= 1e-14
    # the paper's form (its eq. 13): z_{i-1} − (1−γ)(z_{i-1} − z_i) − γΔ(t_i → t_{i+1}) + Δ(t_i → t_{i-1})
    fwd, back = (bdia.phi(coords, z, d, sig[i], s) - z for s in (sig[i + 1], sig[i - 1]))
    paper = z_prev - 0.5 * (z_prev - z) - 0.5 * back + fwd
    assert maxabs(z_next, paper) <= 1e-13


@pytest.mark.parametrize("coords,den,sig", [
    (edict.VP, VP_DEN, vp_sigmas(20)),                        # the official list: repeated last level
    (edict.VP, VP_DEN, vp_sigmas(25, 0.8)),                   # 20 steps part-way
    (edict.VP, VP_DEN, torch.cat([sd15_sigmas()[[999, 700, 450, 300, 200, 120, 60, 20]], torch.zeros(1, dtype=F64)])),
    (edict.FLOW, FLOW_DEN, flow_sigmas(15)),                  # from σ = 1, an odd count
    (edict.FLOW, FLOW_DEN, flow_sigmas(12)[3:]),              # part-way
], ids=["vp-official", "vp-strength", "vp-to-zero", "flow-15", "flow-part"])
@pytest.mark.parametrize("gamma", [0.5, 0.8, 1.0])
def test_inversion_then_regeneration_is_exact(coords, den, sig, gamma):
    z0 = rand(1, 4, 8, 8, seed=3)
    inv, regen = Counted(den), Counted(den)
    z_t, z_t1 = bdia.bdia_invert(inv, z0, sig, gamma, coords=coords)
    assert maxabs(z_t, z0) > 0.5
    back, before = bdia.bdia_sample(regen, z_t, sig, gamma, z_next=z_t1, coords=coords)
    n = sig.numel() - 1
    assert maxabs(back, z0) <= 1e-12 * max(1.0, float(z_t.abs().max())), maxabs(back, z0)
    repeated = bool(sig[-1] == sig[-2])
    assert regen.calls == n - 1 and inv.calls == n - 1 + (0 if repeated else 1)  # DDIM's count


def test_generation_takes_one_model_call_a_step_and_gamma_0_is_ddim():
    sig = vp_sigmas(12)[:-1]  # ending at σ(0), no repeated level: DDIM sampling compares directly
    noise = rand(1, 4, 8, 8, seed=4)
    c = Counted(VP_DEN)
    z, _ = bdia.bdia_sample(c, noise, sig, 0.0)
    assert c.calls == sig.numel() - 1
    x = ddim.ddim_sample(VP_DEN, noise * edict.vp_scale(sig[0]), sig)
    assert maxabs(z * edict.vp_scale(sig[-1]), x) <= 1e-12
    z5, _ = bdia.bdia_sample(VP_DEN, noise, sig, 0.5)
    assert maxabs(z5, z) > 1e-3  # γ changes the chain


def test_growth_warns_when_approximate_and_refuses_an_overflow(caplog):
    assert bdia.growth(0.5, 21) == 2.0 ** 20 and bdia.growth(1.0, 1000) == 1.0
    assert bdia.max_steps(0.5) == 20 and bdia.max_steps(0.8) >= 50
    assert bdia.growth(bdia.min_gamma(40), 40) == pytest.approx(bdia.EXACT_GROWTH)
    assert bdia.check_growth(0.8, 50) is None
    msg = bdia.check_growth(0.5, 40, "BDIA Invert")
    assert "approximate" in msg and "at most 20 steps" in msg and "BDIA Invert" in msg
    with pytest.raises(ValueError, match="float32 arithmetic.*at most"):
        bdia.check_growth(0.05, 200, "BDIA Invert")
    # issue 30: the bound is the model's float32 range (NaN at 80 steps at γ 0.5 on the shapes world), not float64's
    assert bdia.max_steps(0.5, bdia.FINITE_GROWTH) == 54 and "approximate" in bdia.check_growth(0.5, 54)
    with pytest.raises(ValueError, match=r"55 steps at gamma 0.5 amplify .* use at most 54 steps"):
        bdia.check_growth(0.5, 55, "BDIA Invert")
    sig = vp_sigmas(40)
    with caplog.at_level(logging.WARNING):
        bdia.bdia_invert(VP_DEN, rand(1, 4, 4, 4), sig, 0.5)
    assert "approximate" in caplog.text


@pytest.mark.parametrize("gamma,invert,ok", [(0.0, False, True), (0.0, True, False), (1.0, True, True),
                                             (1.2, False, False), (-0.1, False, False)])
def test_gamma_range(gamma, invert, ok):
    if ok:
        bdia.check_gamma(gamma, invert=invert)
    else:
        with pytest.raises(ValueError, match="gamma must be in"):
            bdia.check_gamma(gamma, "BDIA Invert", invert=invert)


def test_bad_schedules_and_dtypes_are_refused():
    z = rand(1, 4, 4, 4)
    with pytest.raises(ValueError, match="at least two steps"):
        bdia.bdia_invert(VP_DEN, z, sd15_sigmas()[[999, 500]], 0.8)
    with pytest.raises(ValueError, match="descending"):
        bdia.bdia_sample(VP_DEN, z, vp_sigmas(5).flip(0), 0.8)
    with pytest.raises(ValueError, match="half precision"):
        bdia.bdia_invert(VP_DEN, z, vp_sigmas(5), 0.8, state_dtype=torch.float16)


def test_the_model_sees_float32_but_the_state_stays_float64():
    seen = []

    def den(x, s):
        seen.append(x.dtype)
        return VP_DEN(x.double(), s.double()).to(x.dtype)
    z_t, z_t1 = bdia.bdia_invert(den, rand(1, 4, 8, 8), vp_sigmas(10), 0.8, model_dtype=torch.float32)
    assert z_t.dtype == F64 and set(seen) == {torch.float32}
    back, _ = bdia.bdia_sample(den, z_t, vp_sigmas(10), 0.8, z_next=z_t1, model_dtype=torch.float32)
    assert maxabs(back, rand(1, 4, 8, 8)) <= 1e-12
