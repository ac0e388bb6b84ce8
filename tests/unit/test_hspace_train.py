"""The trained (implicit) h-space direction: f_t (hooks/directions.py DeltaNet, ImplicitDirection, Composite), its step
scaling, its file form, and the training loop (optim/hspace.py) on a tiny linear world: pure torch."""
import math

import pytest
import torch

from invedit import artifacts
from invedit.hooks import directions, hspace
from invedit.hooks.directions import DeltaNet, Direction, ImplicitDirection, Where
from invedit.hooks.hspace import HSpacePatch
from invedit.optim.hspace import TrainConfig, TrainingError, train_direction
from invedit.losses.directional import directional_clip_loss
from tinynets import sd15_sigmas


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained_net(seed=0, channels=8):
    torch.manual_seed(seed)
    net = DeltaNet(channels)
    with torch.no_grad():
        for p in net.conv2.parameters():
            p.copy_(rand(*p.shape, seed=seed + 1) * 0.1)
    return net


def test_untrained_f_is_exactly_zero_and_the_patch_is_then_the_identity():
    net = DeltaNet(8)
    h = rand(2, 8, 4, 4, seed=1)
    assert torch.count_nonzero(net(h, torch.tensor([500.0]))) == 0
    d = ImplicitDirection(net, {"family": "SD15"})
    p = HSpacePatch(d, 3.0, 10.0, 0.1, "symmetric", "both", "resize", torch.log(sd15_sigmas()))
    o = {"block": ("output", 0), "sigmas": torch.tensor([2.0]), "cond_or_uncond": [0]}
    assert torch.equal(p(h, h, o)[0], h)


def test_implicit_delta_depends_on_h_and_t_and_scales_with_strength_and_step():
    d = ImplicitDirection(trained_net(), {})
    h = rand(2, 8, 4, 4, seed=2)
    a = d.delta_for(h, Where(2.0, 700.0))
    assert a.shape == h.shape and a.abs().max() > 0
    assert not torch.allclose(a, d.delta_for(h, Where(2.0, 100.0)))
    assert not torch.allclose(a, d.delta_for(rand(2, 8, 4, 4, seed=3), Where(2.0, 700.0)))
    d.meta["train_dt"] = "100"
    torch.testing.assert_close(d.delta_for(h, Where(2.0, 700.0, dt_gen=25.0)), 0.25 * a)
    with pytest.raises(directions.HSpaceError, match="needs the timestep"):
        d.delta_for(h, Where(2.0))


def test_step_scaling_keeps_the_total_shift_whatever_the_step_count():
    """Σ over the in-window steps of Δt_gen/Δt_train is (t_hi − t_lo)/Δt_train for any sampling schedule (the
    paper's S/S̃ rule, App. F); directions from prompts are never scaled."""
    sig = sd15_sigmas()
    logs = torch.log(sig)
    d = ImplicitDirection(trained_net(), {"train_dt": "25"})
    totals = []
    for steps in (10, 20, 40, 80):
        ts = [int(t) for t in torch.linspace(999, 0, steps + 1)]
        sched = torch.tensor([float(sig[t]) for t in ts])
        p = HSpacePatch(d, 1.0, math.inf, 0.0, "symmetric", log_sigmas=logs)
        scales = [d.step_scale(p.where(float(s), {"sample_sigmas": sched})) for s in sched[:-1]]
        assert all(abs(x - (a - b) / 25) < 1e-3 for x, a, b in zip(scales, ts, ts[1:]))
        totals.append(sum(scales))
    assert max(totals) - min(totals) < 1e-3 and abs(totals[0] - 999 / 25) < 1e-2
    off = HSpacePatch(d, 1.0, math.inf, 0.0, "symmetric", log_sigmas=logs, step_scaling=False)
    assert d.step_scale(off.where(float(sig[500]), {"sample_sigmas": sig.flip(0)})) == 1.0
    plain = HSpacePatch(Direction(rand(1, 8, 4, 4), torch.tensor([1.0])), 1.0, 10.0, 0.1, log_sigmas=logs)
    h = rand(1, 8, 4, 4, seed=9)
    assert torch.equal(plain.delta_for(h, 2.0, {"sample_sigmas": sig.flip(0)[::100]}), plain.direction.delta[0])


def test_sigma_to_t_inverts_the_table():
    logs = torch.log(sd15_sigmas())
    for t in (0, 1, 250, 998, 999):
        assert abs(hspace.sigma_to_t(logs, float(logs[t].exp())) - t) < 1e-4
    mid = hspace.sigma_to_t(logs, float(((logs[300] + logs[301]) / 2).exp()))
    assert 300 < mid < 301


def test_combining_a_trained_and_a_tensor_direction_adds_them():
    imp = ImplicitDirection(trained_net(), {"name": "smile"})
    ten = Direction(rand(1, 8, 4, 4, seed=5), torch.tensor([1.0]), {"name": "red"})
    c = directions.combine([(imp, 0.5), (ten, -2.0)])
    assert isinstance(c, directions.Composite) and c.channels == 8
    h, w = rand(2, 8, 4, 4, seed=6), Where(3.0, 600.0, 12.5)
    torch.testing.assert_close(c.delta_for(h, w), 0.5 * imp.delta_for(h, w) - 2.0 * ten.delta_for(h, w))
    with pytest.raises(directions.HSpaceError, match="save its parts"):
        directions.to_tensors(c)
    with pytest.raises(directions.HSpaceError, match="different channel counts"):
        directions.combine([(imp, 1.0), (ImplicitDirection(DeltaNet(16), {}), 1.0)])


def test_a_combination_step_scales_each_trained_term_by_its_own_training_spacing():
    """Regression: the patch took Δt_train from the direction it holds, so a Composite (no train_dt) was never
    step-scaled, and ½·f + ½·f sampled differently from f (1.3e-5 on one CPU, caught by a host test's bound)."""
    logs = torch.log(sd15_sigmas())
    f = ImplicitDirection(trained_net(), {"train_dt": "40"})
    g = ImplicitDirection(trained_net(seed=4), {"train_dt": "10"})
    sched = torch.tensor([float(logs[t].exp()) for t in (999, 799, 599, 399)])
    h = rand(2, 8, 4, 4, seed=8)
    opts = {"block": ("output", 0), "sigmas": sched[1:2], "sample_sigmas": sched}

    def shift(direction):
        p = HSpacePatch(direction, 1.0, math.inf, 0.0, "symmetric", log_sigmas=logs)
        return p(h, h, opts)[0] - h
    assert torch.equal(shift(directions.combine([(f, 0.5), (f, 0.5)])), shift(f))  # exact: ½a + ½a = a in floats
    torch.testing.assert_close(shift(directions.combine([(f, 1.0), (g, 1.0)])), shift(f) + shift(g))
    where = HSpacePatch(f, 1.0, math.inf, 0.0, log_sigmas=logs).where(float(sched[1]), opts)
    assert abs(f.step_scale(where) - 200 / 40) < 1e-3 and abs(g.step_scale(where) - 200 / 10) < 1e-3


def test_trained_direction_files_round_trip_and_bad_weights_are_refused(tmp_path):
    d = ImplicitDirection(trained_net(), {"family": "SD15", "train_dt": "25", "src_text": "a face"})
    p = artifacts.save(tmp_path / "smile.safetensors", "hspace", *directions.to_tensors(d))
    tensors, meta = artifacts.load(p, "hspace", "test")
    d2 = directions.from_tensors(tensors, meta)
    h = rand(2, 8, 4, 4, seed=7)
    assert torch.equal(d2.delta_for(h, Where(1.0, 400.0)), d.delta_for(h, Where(1.0, 400.0)))
    assert d2.meta["src_text"] == "a face" and d2.train_dt == 25.0 and meta["kind"] == "implicit"
    tensors["f.conv1.weight"] = tensors["f.conv1.weight"][:4]
    with pytest.raises(directions.HSpaceError, match="do not form an f_t network"):
        directions.from_tensors(tensors, meta)
    from safetensors.torch import save_file
    bad = {k: v.clone() for k, v in artifacts.load(p, "hspace", "t")[0].items()}
    bad["f.conv2.bias"][0] = float("nan")
    save_file(bad, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(artifacts.ArtifactError, match="NaN"):
        artifacts.load(tmp_path / "nan.safetensors", "hspace", "test")


# --- the training loop on a linear toy world --------------------------------------------------------------------------

class LinearWorld:
    """x -> h = A x (the "encoder"), P = B h (a decoder linear in h), images = P, CLIP image features = E P.
    The shifted prediction is P_edit = B (h + f(h, t)); the target direction ΔT = E v for a fixed image change v."""

    def __init__(self, channels=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(channels, 4, generator=g) / 2
        self.B = torch.randn(4, channels, generator=g) / channels ** 0.5
        self.E = torch.randn(6, 4, generator=g)
        self.text = self.E @ torch.tensor([1.0, -1.0, 0.5, 0.0])
        self.net = DeltaNet(channels)
        self.calls = []

    def h(self, x):
        return torch.einsum("ck,bkij->bcij", self.A, x)

    def p(self, h):
        return torch.einsum("kc,bcij->bkij", self.B, h)

    def pair(self, x, sigma):
        self.calls.append(x.requires_grad)
        h = self.h(x)
        return self.p(h).detach(), self.p(h + self.net(h, torch.tensor([float(sigma) * 100])))

    def plain(self, x, sigma):
        return self.p(self.h(x))

    def clip_loss(self, p_edit, p_src):
        feats = [torch.einsum("dk,bkij->bd", self.E, p) for p in (p_edit, p_src)]
        return directional_clip_loss(*feats, self.text)


def test_training_lowers_the_loss_changes_only_f_and_keeps_each_graph_to_one_step():
    w = LinearWorld()
    before = {k: v.clone() for k, v in w.net.state_dict().items()}
    frozen = (w.A.clone(), w.B.clone(), w.E.clone())
    starts = [rand(2, 4, 3, 3, seed=s) * 5 for s in range(4)]
    sig = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5])
    losses = train_direction(w.net.parameters(), w.pair, w.plain, w.clip_loss, starts, sig,
                             TrainConfig(lambda_clip=1.0, lambda_recon=0.05, lr=0.01, epochs=5))
    assert len(losses) == 5 * 4 * 4 and all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(1.0)  # f_t ≡ 0 at the start: ΔI = 0, L_dir = 1, no L1
    assert sum(losses[-16:]) / 16 < 0.3, losses[-16:]  # the last epoch follows ΔT
    assert any(not torch.equal(before[k], v) for k, v in w.net.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(frozen, (w.A, w.B, w.E)))
    assert not any(w.calls)  # x̃_t never carries a gradient: each loss graph spans one prediction


def test_the_official_loss_takes_x0_as_clip_source_and_the_log_form():
    """Issue 24, item 5: loss "official" is diffusion_latent.py's −log((2 − L_dir)/2) with the real image x0 as CLIP's
    source (L1 to P_src unchanged); at the identity (f ≡ 0) its first value is λ·−log((1 + cos(E x0 → E P, ΔT))/2),
    the paper's is λ·1 (ΔI = 0)."""
    w = LinearWorld()
    start = rand(1, 4, 3, 3, seed=3) * 5
    x0 = rand(1, 4, 3, 3, seed=4)
    sig = torch.tensor([5.0, 3.0, 2.0])
    src = torch.einsum("dk,bkij->bd", w.E, x0)

    def clip_loss(p_edit, source):  # the adapter's: x0's features computed once, P_src's each step
        feats = torch.einsum("dk,bkij->bd", w.E, p_edit)
        if not torch.is_tensor(source) or source.ndim != 2:
            source = torch.einsum("dk,bkij->bd", w.E, source)
        return directional_clip_loss(feats, source, w.text)
    cfg = TrainConfig(lambda_clip=0.8, lr=0.0, loss="official")
    losses = train_direction(w.net.parameters(), w.pair, w.plain, clip_loss, [start], sig, cfg, clip_sources=[src])
    p = w.plain(start, sig[0])
    cos = torch.nn.functional.cosine_similarity(torch.einsum("dk,bkij->bd", w.E, p) - src, w.text[None], dim=-1)
    assert losses[0] == pytest.approx(float(-0.8 * torch.log((1 + cos) / 2)), rel=1e-6)
    assert losses[0] != pytest.approx(0.8)
    paper = train_direction(w.net.parameters(), w.pair, w.plain, clip_loss, [start], sig,
                            TrainConfig(lambda_clip=0.8, lr=0.0))
    assert paper[0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="real image x0 of every start"):
        train_direction(w.net.parameters(), w.pair, w.plain, clip_loss, [start], sig, cfg)
    with pytest.raises(ValueError, match="not one of"):
        train_direction(w.net.parameters(), w.pair, w.plain, clip_loss, [start], sig, TrainConfig(loss="code"))


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    w = LinearWorld()
    with pytest.raises(TrainingError, match="lower the learning rate"):
        train_direction(w.net.parameters(), w.pair, w.plain, lambda a, b: torch.tensor(float("nan")),
                        [rand(1, 4, 3, 3)], torch.tensor([2.0, 1.0]), TrainConfig())


def test_directional_loss_is_one_minus_cosine():
    e, s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([1.0, 1.0])
    assert abs(float(directional_clip_loss(e, s, t)) - (1 - 2 / 2 ** 0.5 / 2 ** 0.5 / 1)) < 1e-6  # ΔI = (1, 1) ∥ t
    assert abs(float(directional_clip_loss(s, e, t)) - 2.0) < 1e-6                                 # opposite


def test_intervals_are_read_off_the_curves_as_the_paper_does():
    from invedit.samplers.asyrp import estimate_intervals, first_t_reaching
    ts = [20, 40, 60, 80, 100]
    p = [0.05, 0.2, 0.31, 0.4, 0.6]   # LPIPS(x, P_t) grows with t
    x = [0.3, 0.9, 1.3, 1.5, 1.6]     # LPIPS(x, x_t)
    assert first_t_reaching(list(reversed(ts)), list(reversed(p)), 0.33) == 80  # order of the lists is irrelevant
    assert estimate_intervals(ts, p, x) == (80, 60)
    assert estimate_intervals(ts, p, x, text_cosine=0.9) == (60, 60)  # 0.33·0.9 = 0.297: a bigger edit, longer window
    assert estimate_intervals(ts, p, x, edit_threshold=5.0) == (100, 60)  # never reached: the largest t
    assert estimate_intervals(ts, p, x, edit_threshold=0.1) == (40, 40)   # t_boost never above t_edit
