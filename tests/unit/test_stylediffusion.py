"""optim/stylediffusion.py on tiny models: the official grid and schedules, the value mapper (identity init exactly,
batch statistics always), and the per-step loop for a value mapper and for null-text embeddings (loss falls, the
reconstruction beats plain DDIM at the same guidance, only the learned parameters move, determinism), spec §8."""
import math

import pytest
import torch

from invedit.optim import stylediffusion as sd
from invedit.samplers.coords import vp_scale

from tinynets import sd15_sigmas

F64 = torch.float64


def test_the_official_grid_and_inner_schedule():
    assert sd.leading_timesteps(30)[:3] == [957, 924, 891] and sd.leading_timesteps(30)[-1] == 0
    grid = sd.official_grid(sd15_sigmas(), 30)
    assert grid.shape == (31,) and grid[-1] == grid[-2] == sd15_sigmas()[0]
    assert torch.all(grid[:-1][:-1] > grid[:-1][1:])
    s = sd.Schedule()
    its = [s.iterations(i) for i in range(30)]
    assert its[:8] == [100, 91, 82, 75, 68, 61, 55, 50] and its[-2:] == [7, 6] and sum(its) == 1015
    assert s.lr_at(0) == 0.01 and s.lr_at(29) == pytest.approx(0.0071)
    assert s.stop(1e-5 + 2e-5 * 3 - 1e-9, 3) and not s.stop(1e-5 + 2e-5 * 3, 3)
    with pytest.raises(ValueError):
        sd.leading_timesteps(0)


def test_identity_init_gives_a_one_and_b_zero_exactly_and_batch_statistics_are_always_used():
    tokens = torch.randn(1, 9, 16)
    m = sd.ValueMapper(9, 16, 8, length=5, init="identity")
    a, b = m(tokens)
    assert a.shape == (5, 8) and torch.equal(a, torch.ones(5, 8)) and torch.equal(b, torch.zeros(5, 8))
    m = sd.ValueMapper(9, 16, 8, length=5)
    a1, b1 = m(tokens)
    m.eval()  # eval mode and other running statistics change nothing: BatchNorm uses the batch's
    bn = m.conv_block[0][1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    a2, b2 = m(tokens)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, torch.ones_like(a1))
    assert not bn.training  # the module's mode is left as the caller set it
    assert sd.ValueMapper(9, 8, 8, length=5).proj is None  # equal widths: no projection
    with pytest.raises(ValueError, match="init"):
        sd.ValueMapper(9, 16, 8, init="zeros")


class ToyModel:
    """ε_c(x, i; v) = tanh(W·x + t_i·u + mean_tokens(v)·r) per channel, a 'cross-attention value' v = c ⊙ A + B
    entering through its token mean; ε_u the same with v = ∅. Float64, fixed weights (never trained)."""

    def __init__(self, c=4, L=5, D=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(c, c, generator=g, dtype=F64) * 0.4
        self.u = torch.randn(c, generator=g, dtype=F64)
        self.r = torch.randn(D, c, generator=g, dtype=F64) * 0.5
        self.text = torch.randn(L, D, generator=g, dtype=F64)
        self.null = torch.randn(L, D, generator=g, dtype=F64) * 0.1

    def eps(self, x, sigma, value):
        h = torch.einsum("dc,bchw->bdhw", self.w, x / vp_scale(sigma))
        h = h + (torch.log(sigma) * self.u)[None, :, None, None] + (value.mean(0) @ self.r)[None, :, None, None]
        return torch.tanh(h)

    def weights(self):
        return [self.w, self.u, self.r]


def pivots_of(model, x0, grid):
    """DDIM inversion at guidance 1 (cond branch, plain text): the latents at levels T … 0, listed noisiest first."""
    levels = grid.flip(0)
    xs = [x0]
    for j in range(len(levels) - 1):
        s, s2 = levels[j], levels[j + 1]
        eps = model.eps(xs[-1] * vp_scale(s2) / vp_scale(s), s2, model.text)
        xs.append(xs[-1] + (s2 - s) * eps)
    return xs[::-1]


def plain_ddim(model, x, grid, w):
    for i in range(len(grid) - 1):
        s, s2 = grid[i], grid[i + 1]
        e_u, e_c = model.eps(x, s, model.null), model.eps(x, s, model.text)
        x = x + (s2 - s) * (e_u + w * (e_c - e_u))
    return x


def setup(T=4):
    model = ToyModel()
    grid = sd.official_grid(sd15_sigmas(), T)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 4, 4, generator=g, dtype=F64) * vp_scale(grid[-1])
    return model, grid, x0, pivots_of(model, x0, grid)


def run_value_mapper(model, grid, pivots, schedule, init="identity", seed=0):
    torch.manual_seed(seed)
    tokens = torch.randn(1, 6, 8, dtype=F64)
    mapper = sd.ValueMapper(6, 8, 8, length=5, init=init).double()
    warm = sd.WarmStart(mapper)
    cache = {}

    def begin(i, x):
        cache["e_u"] = model.eps(x, grid[i], model.null).detach()
        return sd.parameters_of(warm.next())

    def predict(x, i):
        a, b = warm.trained[i](tokens)
        e_c = model.eps(x, grid[i], model.text * a + b)
        return cache["e_u"] + schedule.guidance * (e_c - cache["e_u"]), None

    res = sd.optimise_steps(pivots[0], pivots, grid, begin, predict, schedule)
    return res, warm


def test_the_value_mapper_loop_lowers_every_step_loss_and_beats_plain_ddim():
    model, grid, x0, pivots = setup()
    before = [w.clone() for w in model.weights()]
    schedule = sd.Schedule(inner=40, guidance=7.5, attn_weight=0.0, stop_eps=0.0, stop_slope=0.0)
    first_losses = []
    res, warm = run_value_mapper(model, grid, pivots, schedule)
    k = 0
    for n in res.iterations:
        first_losses.append(res.losses[k])
        k += n
    assert all(last <= first for first, last in zip(first_losses, res.step_losses))
    plain = plain_ddim(model, pivots[0], grid, 7.5)
    err_plain = float((plain - x0).abs().max())
    err = float((res.latents[-1] - x0).abs().max())
    assert err < 0.5 * err_plain, (err, err_plain)
    assert all(torch.equal(a, b) for a, b in zip(model.weights(), before))  # the model never moves
    # every step's mapper is its own copy (warm-started), and the template is untouched
    assert len(warm.trained) == len(grid) - 1 and all(m is not warm.template for m in warm.trained)
    a, b = warm.template(torch.randn(1, 6, 8, dtype=F64))
    assert torch.equal(a, torch.ones_like(a)) and torch.equal(b, torch.zeros_like(b))


def test_the_loop_is_deterministic_and_stops_early():
    model, grid, _, pivots = setup()
    s = sd.Schedule(inner=30, guidance=7.5, attn_weight=0.0)
    r1, _ = run_value_mapper(model, grid, pivots, s)
    r2, _ = run_value_mapper(model, grid, pivots, s)
    assert r1.losses == r2.losses and torch.equal(r1.latents[-1], r2.latents[-1])
    loose = sd.Schedule(inner=30, guidance=7.5, attn_weight=0.0, stop_eps=1e6)
    r3, _ = run_value_mapper(model, grid, pivots, loose)
    assert r3.iterations == [1] * (len(grid) - 1)


def test_null_text_on_the_same_loop_beats_plain_ddim():
    model, grid, x0, pivots = setup()
    warm = sd.WarmStart(model.null.clone())
    cache = {}
    schedule = sd.Schedule(inner=30, inner_decay=0.0, guidance=7.5, attn_weight=0.0, stop_eps=0.0, stop_slope=0.0)

    def begin(i, x):
        cache["e_c"] = model.eps(x, grid[i], model.text).detach()
        return sd.parameters_of(warm.next())

    def predict(x, i):
        e_u = model.eps(x, grid[i], warm.trained[i])
        return e_u + schedule.guidance * (cache["e_c"] - e_u), None

    res = sd.optimise_steps(pivots[0], pivots, grid, begin, predict, schedule)
    err_plain = float((plain_ddim(model, pivots[0], grid, 7.5) - x0).abs().max())
    assert float((res.latents[-1] - x0).abs().max()) < 0.6 * err_plain
    assert not torch.equal(warm.trained[0], model.null)


def test_a_nan_loss_stops_the_loop_with_a_clear_error_and_mismatched_pivots_are_refused():
    model, grid, _, pivots = setup()

    def begin(i, x):
        return [torch.nn.Parameter(torch.zeros(1, dtype=F64))]

    def predict(x, i):
        return x * math.nan, None
    with pytest.raises(sd.InversionError, match="lower the learning rate"):
        sd.optimise_steps(pivots[0], pivots, grid, begin, predict, sd.Schedule())
    with pytest.raises(ValueError, match="pivots"):
        sd.optimise_steps(pivots[0], pivots[:-1], grid, begin, predict, sd.Schedule())


def test_tau_v_gates_the_steps_i_below_t_times_tau_v_in_floats():
    """Issue 24, item 13: the steps that use the learned values are i < T·τ_v compared in floats, as the official
    ``trainer.i = i if i < NUM_DDIM_STEPS * trainer.v_replace_steps else None``; the pack's ⌈τ_v·T − 1e-9⌉ gave one
    step fewer where T·τ_v lands just above an integer (tests/unit/parity/test_stylediffusion_parity.py checks all
    10 100 pairs of T ≤ 100, τ_v = k/100)."""
    assert 50 * 0.14 == 7.000000000000001 and sd.value_steps(50, 0.14) == 8
    assert 25 * 0.28 > 7 and sd.value_steps(25, 0.28) == 8
    assert sd.value_steps(30, 0.5) == 15 and sd.value_steps(30, 0.51) == 16  # 15.3: steps 0 … 15
    assert sd.value_steps(30, 0.0) == 0 and sd.value_steps(30, 1.0) == 30 and sd.value_steps(1, 0.01) == 1


def test_the_map_targets_and_the_pivots_follow_the_official_pairing():
    """â_i = the maps recorded at the same latent (inversion step i), â_0 = â_1; ddim_pivots is the DDIM inversion
    at guidance 1 with the model at the next noisier level on the current latent."""
    assert [sd.map_target(i) for i in range(4)] == [1, 1, 2, 3]
    model, grid, x0, pivots = setup()
    seen = []

    def eps(x_in, s_up, j):
        seen.append(j)
        return model.eps(x_in, s_up, model.text)
    got = sd.ddim_pivots(x0, grid, eps)
    assert seen == list(range(len(grid) - 1, 0, -1)) and got[-1] is x0
    assert all(torch.allclose(a, b, rtol=1e-14, atol=1e-14) for a, b in zip(got, pivots))
