"""EDICT and DOODL on flow (CONST) models: the coupled step with the flow Euler step x' = x + (σ' − σ)·v̂
(samplers/edict.py with coords=FLOW), its exact inverse, whole-chain round trips in float64 and the constant-memory
DOODL gradient through the flow chain (issue 15's unit tests)."""
import pytest
import torch

from invedit.optim.doodl import ChainSpec, edict_chain
from invedit.samplers import coords_flow, edict

from tinynets import F64, CFGEps, flow_denoiser, flow_sigmas

DEN = flow_denoiser(CFGEps(g=5.0, out=0.3))  # a nonlinear, guidance-like velocity of std ~1


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def maxabs(a, b):
    return float((a - b).abs().max())


def test_flow_coefficients_make_the_edict_sub_step_the_flow_euler_step():
    """With p = 1 (no mixing) one coupled step is two flow Euler steps, each with the other copy's velocity."""
    eps = edict.EpsFromDenoiser(DEN, None, edict.FLOW)
    s, s_next = torch.tensor(0.8, dtype=F64), torch.tensor(0.6, dtype=F64)
    x, y = rand(1, 4, 8, 8, seed=1), rand(1, 4, 8, 8, seed=2)
    xn, yn = edict.edict_step(eps, x, y, s, s_next, 1.0, False)
    v_y = coords_flow.velocity_from_denoised(y, DEN(y, s), s)
    want_x = coords_flow.euler_step(x, v_y, s, s_next)
    assert torch.equal(xn, want_x)  # a = 1, b = σ' − σ: the same arithmetic as coords_flow.euler_step
    torch.testing.assert_close(yn, coords_flow.euler_step(y, coords_flow.velocity_from_denoised(
        want_x, DEN(want_x, s), s), s, s_next), rtol=0, atol=1e-14)


def test_flow_state_is_comfys_x():
    s = torch.tensor(0.7, dtype=F64)
    x = rand(2, 4, 3, 3, seed=3)
    assert torch.equal(edict.FLOW.to_state(x, s), x) and torch.equal(edict.FLOW.to_comfy(x, s), x)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("levels", [(1.0, 0.9), (0.3, 0.0)])
def test_flow_single_step_inverse_is_exact(swap, levels):
    eps = edict.EpsFromDenoiser(DEN, None, edict.FLOW)
    s, s_next = (torch.tensor(v, dtype=F64) for v in levels)
    x, y = rand(1, 4, 8, 8, seed=5), rand(1, 4, 8, 8, seed=6)
    xn, yn = edict.edict_step(eps, x, y, s, s_next, 0.93, swap)
    assert maxabs(xn, x) > 1e-3
    xr, yr = edict.edict_step_inverse(eps, xn, yn, s, s_next, 0.93, swap)
    assert maxabs(xr, x) <= 1e-13 and maxabs(yr, y) <= 1e-13


def test_x_independent_velocity_gives_the_straight_flow_exactly():
    """v(x, σ) = ε − x0 (the perfect straight flow): both copies stay on the line, so x = y = the flow point at every
    level, the mixing changes nothing, and the chain from ε lands on x0 (and inverts back to ε)."""
    x0, e = rand(1, 4, 6, 6, seed=7), rand(1, 4, 6, 6, seed=8)

    def straight(x, sigma):
        return x - sigma * (e - x0)
    sig = flow_sigmas(10)
    a, b = edict.edict_sample(straight, e, e, sig, coords=edict.FLOW)
    torch.testing.assert_close(a, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(b, x0, rtol=0, atol=1e-12)
    a, b = edict.edict_invert(straight, x0, x0, sig, coords=edict.FLOW)
    torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [10, 25, 50, 7])
@pytest.mark.parametrize("leapfrog", [True, False])
def test_flow_round_trips_are_exact_in_float64(steps, leapfrog):
    """Generation from σ = 1 and its inversion, and an image latent inverted and regenerated (odd and even steps)."""
    sig = flow_sigmas(steps)
    kw = dict(leapfrog=leapfrog, coords=edict.FLOW)
    noise = rand(1, 4, 16, 16, seed=9)
    x0, y0 = edict.edict_sample(DEN, noise, noise, sig, **kw)
    assert maxabs(x0, noise) > 0.3
    xT, yT = edict.edict_invert(DEN, x0, y0, sig, **kw)
    assert max(maxabs(xT, noise), maxabs(yT, noise)) <= 1e-9
    z0 = rand(1, 4, 16, 16, seed=10)
    xT, yT = edict.edict_invert(DEN, z0, z0, sig[len(sig) // 5:], **kw)  # strength 0.8
    x0, y0 = edict.edict_sample(DEN, xT, yT, sig[len(sig) // 5:], **kw)
    assert max(maxabs(x0, z0), maxabs(y0, z0)) <= 1e-11


def test_flow_chain_differs_from_the_vp_chain():
    """The coordinates matter: the same denoiser and list through the VP step gives another end."""
    sig = flow_sigmas(8)
    noise = rand(1, 4, 8, 8, seed=11)
    flow, _ = edict.edict_sample(DEN, noise, noise, sig[1:], coords=edict.FLOW)
    vp, _ = edict.edict_sample(DEN, noise, noise, sig[1:], coords=edict.VP)
    assert maxabs(flow, vp) > 1e-2


W = rand(1, 4, 6, 6, seed=12)


def toy_loss(x0, y0):
    return (W * torch.tanh(x0)).sum() + 0.1 * (y0 ** 2).sum()


@pytest.mark.parametrize("steps", [5, 12])
@pytest.mark.parametrize("mode", ["reversible", "checkpoint"])
def test_doodl_flow_chain_gradient_equals_naive_autograd(steps, mode):
    x, y = rand(1, 4, 6, 6, seed=13), rand(1, 4, 6, 6, seed=14)
    sig = flow_sigmas(steps)
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    want = torch.autograd.grad(toy_loss(*edict.edict_sample(DEN, xl, yl, sig, coords=edict.FLOW)), (xl, yl))
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    got = torch.autograd.grad(toy_loss(*edict_chain(xl, yl, ChainSpec(DEN, sig, mode=mode, coords=edict.FLOW))),
                              (xl, yl))
    for g, w in zip(got, want):
        assert float((g - w).norm() / w.norm()) <= 1e-10
