"""RF-Solver and FireFlow parity: the pack's ``samplers/flow_solvers.py`` against independent float64 transcriptions
of the authors' code, on a seeded non-linear toy velocity model.

RF-Solver — wangjiangshan0725/RF-Solver-Edit at 3388e299cae6ab0a3ee9eceb09911a4543a48576 (fetched into
/work/.mirror/wangjiangshan0725+RF-Solver-Edit), ``FLUX_Image_Edit/src/flux/sampling.py``, ``denoise`` (lines
77–136): ``timesteps = timesteps[::-1]`` when ``inverse`` (95); for each (t_curr, t_prev) of consecutive timesteps
(100): ``pred`` = the model at (img, t_curr); ``img_mid = img + (t_prev − t_curr)/2·pred`` (118); ``pred_mid`` = the
model at (img_mid, t_curr + (t_prev − t_curr)/2) (120–131); ``first_order = (pred_mid − pred)/((t_prev − t_curr)/2)``
(133); ``img = img + (t_prev − t_curr)·pred + 0.5·(t_prev − t_curr)²·first_order`` (134).

FireFlow — HolmesShuan/FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-Editing at
98588a6f87662d73d8f9722294ad1fcf02ed211d, ``src/flux/sampling.py``, ``denoise_fireflow`` (lines 185–248):
``next_step_velocity = None`` (208); per step: ``pred`` = the model at (img, t_curr) if ``next_step_velocity`` is
None, else ``next_step_velocity`` (216–228); ``img_mid = img + (t_prev − t_curr)/2·pred``; ``pred_mid`` = the model
at (img_mid, t_curr + (t_prev − t_curr)/2); ``next_step_velocity = pred_mid`` (244); ``img = img + (t_prev −
t_curr)·pred_mid`` (246). ``src/edit.py`` (163–188) inverts with ``inverse=True`` and samples with a second call
(a fresh ``next_step_velocity``).

Both feed Flux the raw velocity v(x, t) with x = (1 − t)·x0 + t·ε; the pack reads it from ComfyUI's CONST wrapper,
D(x, σ) = x − σ·v(x, σ), as v̂ = (x − D)/σ (parity_toys-style: the toy below wrapped as ComfyUI wraps a flow model).
Tolerance: ``TOL`` = 1e-12 relative (float64; measured worst 4.4e-16 sampling, 5.7e-16 inverting). Planted mutations (the half step taken whole,
the derivative over h instead of h/2, the ½ of the Taylor term dropped, the midpoint velocity at t_curr; FireFlow
reusing ``pred`` instead of ``pred_mid``, or not reusing at all) must move it > 1000 × TOL.

Deliberate difference: an inversion from the clean image starts at t = 0, where the official code calls the network
at t = 0 and the pack, which cannot read v from D(x, 0) = x, reads it at σ = 1e-4 (``SIGMA_FLOOR``, the level
ComfyUI's FlipSigmas puts in place of 0): measured 2.0e-5 (RF-Solver) and 2.1e-5 (FireFlow) relative at 20 steps,
against their own round-trip errors of 2.5e-2 and 3.9e-2 on this toy.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from invedit.samplers import flow_solvers

F64 = torch.float64
TOL = 1e-12
CAUGHT = 1000 * TOL

_g = torch.Generator().manual_seed(21)
W1 = torch.randn(16, 4, 3, 3, generator=_g, dtype=F64) * 0.25
W2 = torch.randn(4, 16, 3, 3, generator=_g, dtype=F64) * 0.25
WT = torch.randn(16, generator=_g, dtype=F64)
X0 = torch.randn(1, 4, 8, 8, generator=_g, dtype=F64)


def velocity(x, t):
    """A seeded non-linear, time-dependent velocity field with std ~1 (ε − x0-like plus a conv/tanh part)."""
    h = torch.nn.functional.conv2d(x, W1, padding=1) + (WT * float(t))[None, :, None, None]
    return torch.nn.functional.conv2d(torch.tanh(h), W2, padding=1) + (x - X0) / max(float(t), 0.05) * 0.3


def comfy_flow(x, sigma):
    """ComfyUI's CONST wrapper around it: D(x, σ) = x − σ·v(x, σ)."""
    return x - sigma * velocity(x, sigma)


@dataclass(frozen=True)
class Mut:
    whole_half_step: bool = False    # img_mid = img + h·pred
    derivative_over_h: bool = False  # first_order = (pred_mid − pred)/h
    no_half: bool = False            # img + h·pred + h²·first_order
    mid_time_at_start: bool = False  # pred_mid at t_curr
    reuse_pred: bool = False         # FireFlow: next_step_velocity = pred
    no_reuse: bool = False           # FireFlow: a model call for pred every step


NONE = Mut()
MUTATIONS = {
    "half step taken whole": Mut(whole_half_step=True),
    "derivative over h": Mut(derivative_over_h=True),
    "1/2 of the Taylor term dropped": Mut(no_half=True),
    "midpoint velocity at t_curr": Mut(mid_time_at_start=True),
    "FireFlow reuses pred": Mut(reuse_pred=True),
    "FireFlow reuses nothing": Mut(no_reuse=True),
}


def official(solver, img, timesteps, inverse, mut=NONE):
    """denoise (RF-Solver) / denoise_fireflow (FireFlow); ``timesteps`` descending as get_schedule gives them."""
    if inverse:
        timesteps = timesteps[::-1]
    next_step_velocity = None
    for t_curr, t_prev in zip(timesteps[:-1], timesteps[1:]):
        if solver == "fireflow" and next_step_velocity is not None and not mut.no_reuse:
            pred = next_step_velocity
        else:
            pred = velocity(img, t_curr)
        img_mid = img + (t_prev - t_curr) / (1 if mut.whole_half_step else 2) * pred
        t_mid = t_curr if mut.mid_time_at_start else t_curr + (t_prev - t_curr) / 2
        pred_mid = velocity(img_mid, t_mid)
        if solver == "rf_solver":
            first_order = (pred_mid - pred) / ((t_prev - t_curr) / (1 if mut.derivative_over_h else 2))
            img = img + (t_prev - t_curr) * pred + (1.0 if mut.no_half else 0.5) * (t_prev - t_curr) ** 2 * first_order
        else:
            next_step_velocity = pred if mut.reuse_pred else pred_mid
            img = img + (t_prev - t_curr) * pred_mid
    return img


def schedule(n, shift=3.0, lo=0.0):
    u = torch.linspace(1.0, 0.0, n + 1, dtype=F64)
    s = shift * u / (1 + (shift - 1) * u)
    return lo + (1 - lo) * s if lo else s


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def noise():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)


@pytest.mark.parametrize("solver", flow_solvers.SOLVERS)
@pytest.mark.parametrize("n", [4, 15, 28])
def test_sampling_matches_the_official_loop(solver, n):
    ts = schedule(n)
    ref = official(solver, noise(), [float(t) for t in ts], inverse=False)
    ours = flow_solvers.solve(solver, comfy_flow, noise(), ts)
    assert rel(ref, noise()) > 0.3
    assert rel(ours, ref) <= TOL


@pytest.mark.parametrize("solver", flow_solvers.SOLVERS)
@pytest.mark.parametrize("n", [5, 28])
def test_inversion_matches_the_official_loop_above_the_floor(solver, n):
    """A schedule whose lowest level is above 0 (here 0.05 … 1): every evaluation is at the official times."""
    ts = schedule(n, lo=0.05)
    ref = official(solver, X0, [float(t) for t in ts], inverse=True)
    ours = flow_solvers.solve(solver, comfy_flow, X0, ts.flip(0))
    assert rel(ref, X0) > 0.3
    assert rel(ours, ref) <= TOL


@pytest.mark.parametrize("solver", flow_solvers.SOLVERS)
def test_inversion_from_zero_reads_the_velocity_at_the_floor(solver):
    ts = schedule(20)
    ref = official(solver, X0, [float(t) for t in ts], inverse=True)
    ours = flow_solvers.solve(solver, comfy_flow, X0, ts.flip(0))
    d = rel(ours, ref)
    back = flow_solvers.solve(solver, comfy_flow, ours, ts)
    drift = rel(back, X0)  # the solver's own round-trip error, for scale
    assert TOL < d < 1e-2 * drift, (d, drift)  # measured 2.0e-5 / 2.1e-5 against 2.5e-2 / 3.9e-2


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mutations_are_caught(name):
    mut = MUTATIONS[name]
    ts = schedule(15)
    tl = [float(t) for t in ts]
    worst = 0.0
    for solver in flow_solvers.SOLVERS:
        ours = flow_solvers.solve(solver, comfy_flow, noise(), ts)
        worst = max(worst, rel(ours, official(solver, noise(), tl, inverse=False, mut=mut)))
    assert worst > CAUGHT, (name, worst)


def test_model_calls_and_the_solvers_beat_euler_on_round_trips():
    calls = {}
    for solver in flow_solvers.SOLVERS:
        c = []

        def D(x, s):
            c.append(1)
            return comfy_flow(x, s)
        flow_solvers.solve(solver, D, noise(), schedule(10))
        calls[solver] = len(c)
    assert calls == {"rf_solver": flow_solvers.CALLS["rf_solver"](10), "fireflow": flow_solvers.CALLS["fireflow"](10)}
    assert calls == {"rf_solver": 20, "fireflow": 11}
    ts = schedule(12, lo=0.05)

    def euler(x, levels):
        for s, s2 in zip(levels[:-1], levels[1:]):
            x = x + (s2 - s) * velocity(x, s)
        return x
    err_euler = rel(euler(euler(X0, ts.flip(0)), ts), X0)
    for solver in flow_solvers.SOLVERS:
        inv = flow_solvers.solve(solver, comfy_flow, X0, ts.flip(0))
        err = rel(flow_solvers.solve(solver, comfy_flow, inv, ts), X0)
        assert err < err_euler, (solver, err, err_euler)
