"""EMS / CSDS math (optim/csds.py): the manipulation algebra, length policies, the η schedules, κ, the CSDS update's
fixed point on a linear model, its constraint, the autograd mode's descent, and the SDE metric's closed form
(ems_csds.md §8)."""
import math

import pytest
import torch

from invedit.optim import csds

F64 = torch.float64


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- Manipulate -----------------------------------------------------------------------------------------------------

C0, C1, C2 = rand(1, 154, 64, seed=1), rand(1, 154, 64, seed=2), rand(1, 154, 64, seed=3)


def test_alpha_zero_is_the_source_bit_for_bit_and_one_the_target():
    before = C0.clone()
    out = csds.manipulate(C0, C1, 0.0)
    assert torch.equal(out, C0) and out is not C0
    torch.testing.assert_close(csds.manipulate(C0, C1, 1.0), C1, rtol=0, atol=1e-6)
    assert torch.equal(C0, before)  # inputs not mutated


def test_manipulation_is_linear_in_alpha_and_reverses():
    a1, a2 = 0.7, -1.9
    lhs = csds.manipulate(C0, C1, a1 + a2) - C0
    rhs = (csds.manipulate(C0, C1, a1) - C0) + (csds.manipulate(C0, C1, a2) - C0)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-5)
    back = csds.manipulate(C1 - C0, torch.zeros_like(C0), 2.5, base=csds.manipulate(C0, C1, 2.5))  # + 2.5·(0 − n)
    torch.testing.assert_close(back, C0, rtol=0, atol=1e-5)


def test_multi_attribute_accumulation_is_the_sum_and_order_independent():
    ab = csds.manipulate(C0, C2, -0.5, base=csds.manipulate(C0, C1, 1.5))
    ba = csds.manipulate(C0, C1, 1.5, base=csds.manipulate(C0, C2, -0.5))
    want = C0 + 1.5 * (C1 - C0) - 0.5 * (C2 - C0)
    torch.testing.assert_close(ab, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(ba, want, rtol=0, atol=1e-5)


def test_token_part_masks_only_its_slice():
    for part, edited in (("clip_part", slice(0, 77)), ("t5_part", slice(77, 154))):
        m = csds.token_mask(154, part, 77, C0)
        out = csds.manipulate(C0, C1, 1.0, mask=m)
        keep = torch.ones(154, dtype=torch.bool)
        keep[edited] = False
        assert torch.equal(out[:, keep], C0[:, keep])
        torch.testing.assert_close(out[:, edited], C1[:, edited], rtol=0, atol=1e-6)
    assert csds.token_mask(154, "all", 77, C0) is None


def test_length_policies():
    a, b = rand(1, 77, 8, seed=4), rand(1, 154, 8, seed=5)
    pa, pb = csds.match_length(a, b, "zero_pad")
    assert pa.shape == pb.shape == (1, 154, 8) and torch.equal(pa[:, :77], a) and not pa[:, 77:].any()
    ta, tb = csds.match_length(a, b, "truncate")
    assert ta.shape == tb.shape == (1, 77, 8) and torch.equal(tb, b[:, :77])
    with pytest.raises(csds.CSDSError, match="the source has 77 tokens and the target 154"):
        csds.match_length(a, b, "error")
    with pytest.raises(csds.CSDSError, match="differ beyond their length"):
        csds.match_length(a, rand(1, 77, 9), "zero_pad")


# ---- schedules and κ ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", csds.SCHEDULES)
def test_eta_schedules_start_end_and_are_monotone(schedule):
    K = 17
    etas = [csds.eta(k, K, 0.1, 0.01, schedule) for k in range(K)]
    assert etas[0] == pytest.approx(0.1, rel=1e-12)
    assert etas[-1] == pytest.approx(0.1 if schedule == "constant" else 0.01, rel=1e-12)
    assert all(a >= b for a, b in zip(etas, etas[1:]))
    assert csds.eta(0, 1, 0.1, 0.01, schedule) == 0.1


def test_kappa():
    assert csds.kappa(True, 0.9) == 1.0 and csds.kappa(False, 3.0, "raw") == 1.0
    assert csds.kappa(False, 3.0) == pytest.approx(math.sqrt(10.0))


def test_eps_from_x0_inverts_the_forward_noising():
    x0, e = rand(1, 4, 4, 4, seed=6, dtype=F64), rand(1, 4, 4, 4, seed=7, dtype=F64)
    for a, b in ((1 - 0.9, 0.9), (1.0, 4.2)):  # flow, VE
        torch.testing.assert_close(csds.eps_from_x0(a * x0 + b * e, x0, a, b), e, rtol=0, atol=1e-12)


# ---- the CSDS update ------------------------------------------------------------------------------------------------

class Linear:
    """ε(z, c) = a·z + W·c̄: the spec's toy linear model; c̄ is a conditioning vector per prompt."""

    def __init__(self, a=1.3, c_t=None, c_attr=None):
        self.a = a
        self.w = rand(4, 3, seed=8)
        self.c_t = rand(3, seed=9) if c_t is None else c_t
        self.c_attr = rand(3, seed=10) if c_attr is None else c_attr

    def eps(self, z, c):
        return self.a * z + (self.w @ c)[None, :, None, None]

    def __call__(self, z):
        return self.eps(z, self.c_t), self.eps(z, self.c_attr)

    def fixed_point(self, zt, lam, s_dir=1.0):
        return zt - s_dir * (self.w @ (self.c_attr - self.c_t))[None, :, None, None] / (lam * self.a)


ZT = rand(1, 4, 6, 6, seed=11)


def test_zero_iterations_or_zero_lr_keep_z_t():
    m = Linear()
    assert torch.equal(csds.csds_refine(m, ZT, csds.CSDSConfig(iterations=0)).z, ZT)
    assert torch.equal(csds.csds_refine(m, ZT, csds.CSDSConfig(iterations=5, lr_start=0.0, lr_end=0.0,
                                                               lr_schedule="linear")).z, ZT)


def test_attribute_equal_to_the_edit_prompt_keeps_z_t_for_every_lambda():
    c = rand(3, seed=12)
    m = Linear(c_t=c, c_attr=c.clone())
    for lam in (0.1, 0.5, 3.0):
        assert torch.equal(csds.csds_refine(m, ZT, csds.CSDSConfig(iterations=10, lam=lam)).z, ZT)


@pytest.mark.parametrize("direction", list(csds.DIRECTIONS))
def test_delta_mode_converges_monotonically_to_the_closed_form_fixed_point(direction):
    m, lam = Linear(), 0.5
    s_dir = csds.DIRECTIONS[direction]
    star = m.fixed_point(ZT, lam, s_dir)
    dists = []
    cfg = csds.CSDSConfig(iterations=200, lr_start=0.5, lr_end=0.5, lr_schedule="constant", lam=lam,
                          direction=direction)
    csds.csds_refine(m, ZT, cfg, on_step=lambda s: dists.append(float((s.x - star).norm())))
    assert all(b <= a + 1e-6 for a, b in zip(dists, dists[1:])) and dists[-1] <= 1e-4, dists[-1]


def test_displacement_scales_as_one_over_lambda_and_the_direction_flips_it():
    m = Linear()
    shift = {lam: m.fixed_point(ZT, lam) - ZT for lam in (0.25, 0.5, 1.0)}
    torch.testing.assert_close(shift[0.25], 2 * shift[0.5], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shift[0.5], 2 * shift[1.0], rtol=1e-5, atol=1e-6)
    cfg = dict(iterations=300, lr_start=0.5, lr_end=0.5, lr_schedule="constant", lam=0.5)
    fwd = csds.csds_refine(m, ZT, csds.CSDSConfig(**cfg)).z - ZT
    rev = csds.csds_refine(m, ZT, csds.CSDSConfig(direction="literal_order", **cfg)).z - ZT
    torch.testing.assert_close(fwd, -rev, rtol=1e-4, atol=1e-5)


class TinyNet(torch.nn.Module):
    """A small nonlinear conditional predictor ε(z, c) = z + conv(tanh(conv(z) + c)) (∂ε/∂z ≈ I, as at high noise)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(13)
        self.w1 = (torch.randn(8, 4, 3, 3, generator=g) * 0.15).to(dtype)
        self.w2 = (torch.randn(4, 8, 3, 3, generator=g) * 0.15).to(dtype)
        self.c_t, self.c_a = rand(8, seed=14).to(dtype), rand(8, seed=15).to(dtype)

    def eps(self, z, c):
        z = z.to(self.w1.dtype)
        h = torch.tanh(torch.nn.functional.conv2d(z, self.w1, padding=1) + c[None, :, None, None])
        return z + torch.nn.functional.conv2d(h, self.w2, padding=1)

    def __call__(self, z):
        return self.eps(z, self.c_t), self.eps(z, self.c_a)


def test_the_constraint_is_non_increasing_in_lambda():
    net = TinyNet()
    moved = [float((csds.csds_refine(net, ZT, csds.CSDSConfig(iterations=30, lam=lam)).z - ZT).norm())
             for lam in (0.1, 0.3, 1.0, 3.0)]
    assert moved[0] > 0 and all(b <= a for a, b in zip(moved, moved[1:])), moved


def eq2(e_t, e_a, e_ref, lam):
    """The paper's Eq. 2, written here: ‖ε_c~(z') − ε_attr(z')‖² + λ·‖ε_c~(z') − ε_c~(z_t)‖² (no ½)."""
    return ((e_t - e_a) ** 2).sum() + lam * ((e_t - e_ref) ** 2).sum()


def test_autograd_mode_descends_eq2_and_steps_by_its_exact_gradient():
    net = TinyNet()
    res = csds.csds_refine(net, ZT, csds.CSDSConfig(iterations=15, lr_start=0.01, lr_end=0.01,
                                                    lr_schedule="constant", mode="autograd"))
    assert all(b <= a for a, b in zip(res.losses, res.losses[1:])) and res.losses[-1] < res.losses[0], res.losses
    # one step in float64 from z_t: z' = z_t − η·∇Eq.2(z_t), the gradient by central finite differences of Eq. 2
    net64, lam, step = TinyNet(F64), 0.5, 0.01
    z = rand(1, 4, 3, 3, seed=16, dtype=F64)
    e_ref = net64(z)[0]
    zs = z + 0.1 * rand(1, 4, 3, 3, seed=17, dtype=F64)  # a start off z_t: the constraint term's gradient is not 0
    loss = lambda zz: float(eq2(*net64(zz), e_ref, lam))  # noqa: E731

    class Shifted:  # the pack's ε_ref is ε_c~ at its start: start at z_t, then ask for the step from zs
        def __init__(self):
            self.first = True

        def __call__(self, zz):
            if self.first:
                self.first = False
                return net64(z)
            return net64(zz + (zs - z))
    out = csds.csds_refine(Shifted(), z, csds.CSDSConfig(iterations=1, lr_start=step, lr_end=step, lam=lam,
                                                           mode="autograd")).z
    g_pack = (z - out) / step
    h = 1e-6
    for i in ((0, 1, 2, 0), (0, 3, 0, 2), (0, 0, 1, 1)):
        d = torch.zeros_like(z)
        d[i] = h
        fd = (loss(zs + d) - loss(zs - d)) / (2 * h)
        assert float(g_pack[i]) == pytest.approx(fd, rel=1e-6), i  # the old ½·Eq. 2 gradient is off by 2×


def test_delta_mode_steps_by_eq2s_gradient_with_the_identity_jacobian_the_same_step_as_autograd():
    """Issue 24: η is the paper's η. On a model whose ∂ε_c~/∂z' is the identity and whose ε_attr is held fixed
    (straight-through: the values of a nonlinear net, the Jacobian of the SDS convention), delta mode with
    literal_order and autograd mode take the same step for the same η, and that step is η·∇Eq. 2 =
    η·2·[(ε_c~ − ε_attr) + λ·(ε_c~ − ε_ref)]. Before the fix both stepped with half of it."""
    net64, lam, step = TinyNet(F64), 0.7, 0.03

    def straight_through(zz):
        e_t, e_a = net64(zz.detach())
        return zz + (e_t - zz).detach(), e_a.detach()
    z = rand(1, 4, 5, 5, seed=18, dtype=F64)
    run = lambda mode, k: csds.csds_refine(straight_through, z, csds.CSDSConfig(  # noqa: E731
        iterations=k, lr_start=step, lr_end=step / 3, lam=lam, mode=mode, direction="literal_order")).z
    for k in (1, 4):
        delta, auto = run("delta", k), run("autograd", k)
        torch.testing.assert_close(delta, auto, rtol=1e-13, atol=1e-13)
    e_t, e_a = net64(z)
    want = z - step * 2 * ((e_t - e_a) + lam * (e_t - e_t))  # the first step: ε_ref = ε_c~(z_t)
    torch.testing.assert_close(run("delta", 1), want, rtol=1e-13, atol=1e-13)
    half = z - step * ((e_t - e_a))  # the pre-issue-24 step
    assert float((run("delta", 1) - half).norm()) > 0.4 * float((want - z).norm())


def test_a_half_precision_model_gives_a_finite_float32_result():
    res = csds.csds_refine(TinyNet(torch.float16), ZT, csds.CSDSConfig(iterations=5))
    assert res.z.dtype == torch.float32 and torch.isfinite(res.z).all() and not torch.equal(res.z, ZT)


def test_a_mask_keeps_the_protected_region_and_nan_stops_with_an_error():
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1
    z = csds.csds_refine(TinyNet(), ZT, csds.CSDSConfig(iterations=5), mask=mask).z
    assert torch.equal(z[..., 3:], ZT[..., 3:]) and not torch.equal(z[..., :3], ZT[..., :3])
    with pytest.raises(csds.CSDSError, match="NaN/inf at iteration 0"):
        csds.csds_refine(lambda z: (z * math.nan, z), ZT, csds.CSDSConfig(iterations=2))


def test_bad_settings_are_refused():
    for kw, match in ((dict(direction="up"), "direction"), (dict(mode="sgd"), "grad_mode"),
                      (dict(lr_schedule="step"), "lr_schedule"), (dict(lam=-1.0), "lambda")):
        with pytest.raises(csds.CSDSError, match=match):
            csds.CSDSConfig(**kw)


# ---- SDE ------------------------------------------------------------------------------------------------------------

def test_sde_closed_form_and_its_guards():
    x = torch.zeros(2, 3, 4, 4)
    same, flip = torch.full_like(x, 0.1), torch.full_like(x, 0.5)  # RMSE 0.1 and 0.5
    n = math.sqrt(x[0].numel())  # L2 = RMSE·sqrt(pixels·channels)
    total, ratio, keep = csds.sde(x, same, flip, "rmse")
    assert ratio == pytest.approx(0.2) and keep == pytest.approx(0.5) and total == pytest.approx(0.7)
    assert csds.sde(x, x, flip, "rmse")[0] == pytest.approx(0.5)  # recon_same == x: SDE = d(x, flipped)
    assert math.isfinite(csds.sde(x, same, x + 1e-12)[0])  # recon_flipped next to x: guarded by eps
    for a, b in ((same, x), (x, x)):  # recon_flipped == x: the ratio is undefined (0/0 gave NaN: issue 29, 8)
        with pytest.raises(csds.CSDSError, match=r"recon_flipped equals the original in image\(s\) \[1, 2\].*"
                                                 r"connect the reconstruction made under the flipped prompt"):
            csds.sde(x, a, b, eps=0.0)
    l2 = csds.sde(x, same, flip, "l2")
    assert l2[1] == pytest.approx(0.2) and l2[2] == pytest.approx(0.5 * n) and l2[0] == pytest.approx(0.2 + 0.5 * n)
    with pytest.raises(csds.CSDSError, match="differ in shape"):
        csds.sde(x, same[:1], flip)


def test_sde_defaults_to_the_papers_l2_form_of_eq1():
    """Issue 24: Eq. 1 is written with ‖·‖_2; the default is that norm (it was the per-pixel RMSE)."""
    g = torch.Generator().manual_seed(21)
    x, same, flip = (torch.rand(1, 8, 8, 3, generator=g) for _ in range(3))
    l2 = lambda a, b: float((a.double() - b.double()).flatten().norm())  # noqa: E731
    want = l2(x, same) / l2(x, flip) + l2(x, flip)
    assert csds.sde(x, same, flip)[0] == pytest.approx(want, rel=1e-12)
    assert csds.sde(x, same, flip, "rmse")[0] == pytest.approx(l2(x, same) / l2(x, flip) + l2(x, flip) / 8 / 3 ** .5,
                                                               rel=1e-12)


def test_prompt_triplet_replaces_whole_words_only():
    s = "a red cat on a red category sign"
    assert csds.replace_words(s, "Red", "blue") == "a blue cat on a red category sign"
    assert csds.replace_words(s, "red", "blue", replace_all=True) == "a blue cat on a blue category sign"
    assert csds.replace_words(s, "cat", "dog", replace_all=True) == "a red dog on a red category sign"
    with pytest.raises(csds.CSDSError, match="'green' is not a word of the source prompt"):
        csds.replace_words(s, "green", "blue")
    with pytest.raises(csds.CSDSError, match="'find' is empty"):
        csds.replace_words(s, " ", "blue")
