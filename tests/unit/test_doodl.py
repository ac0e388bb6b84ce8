"""DOODL (optim/doodl.py): the constant-memory gradient through the EDICT chain and the optimisation loop, on tiny
nets in float64 (pure torch)."""
import pytest
import torch

from invedit.optim.doodl import ChainSpec, DOODLConfig, doodl_optimize, edict_chain, pair_loss_gradients
from invedit.samplers import edict
from tinynets import F64, CFGEps, sd15_sigmas, sigma_denoiser

SIGMAS = sd15_sigmas()
DEN = sigma_denoiser(CFGEps(g=5.0))


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def spec(steps, mode="reversible", p=0.93, leapfrog=True, **kw):
    return ChainSpec(DEN, edict.official_sigmas(SIGMAS, steps), p=p, leapfrog=leapfrog, mode=mode, **kw)


W, V = rand(1, 4, 6, 6, seed=7), rand(1, 4, 6, 6, seed=8)


def toy_loss(x0, y0):
    """A nonlinear scalar of both ends."""
    return (W * torch.tanh(x0)).sum() + (V * y0 ** 2).sum() * 0.1


def naive_grad(steps, x, y, p=0.93, leapfrog=True):
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    x0, y0 = edict.edict_sample(DEN, xl, yl, edict.official_sigmas(SIGMAS, steps), p=p, leapfrog=leapfrog)
    return torch.autograd.grad(toy_loss(x0, y0), (xl, yl))


@pytest.mark.parametrize("steps", [5, 12, 20])
@pytest.mark.parametrize("mode", ["reversible", "checkpoint", "naive"])
def test_chain_gradient_equals_naive_autograd(steps, mode):
    x, y = rand(1, 4, 6, 6, seed=1), rand(1, 4, 6, 6, seed=2)
    want = naive_grad(steps, x, y)
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    got = torch.autograd.grad(toy_loss(*edict_chain(xl, yl, spec(steps, mode))), (xl, yl))
    for g, w in zip(got, want):
        rel = float((g - w).norm() / w.norm())
        assert rel <= (1e-10 if mode == "reversible" else 1e-13), rel  # naive: the same autograd graph


@pytest.mark.parametrize("i", [0, 1, 4])
@pytest.mark.parametrize("scaling", [True, False])
def test_step_vjp_rebuilds_the_same_inputs_as_the_inverse_step(i, scaling):
    """edict_step_vjp walks back with the inverse's own equations (it needs their model evaluations for the VJP):
    its input pair is bit-identical to samplers.edict.edict_step_inverse's."""
    from invedit.optim.doodl import edict_step_vjp
    from invedit.samplers.edict import EpsFromDenoiser, edict_step_inverse
    s = spec(6, official_input_scaling=scaling)
    eps = EpsFromDenoiser(DEN, None)
    x, y = rand(1, 4, 6, 6, seed=9), rand(1, 4, 6, 6, seed=10)
    want = edict_step_inverse(eps, x, y, s.sigmas[i], s.sigmas[i + 1], s.p, i % 2 == 1, scaling)
    got = edict_step_vjp(s, eps, i, x, y, torch.ones_like(x), torch.ones_like(y))[:2]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_odd_step_counts_and_no_leapfrog_also_match():
    x, y = rand(1, 4, 6, 6, seed=3), rand(1, 4, 6, 6, seed=4)
    for steps, leapfrog in ((7, True), (6, False)):
        want = naive_grad(steps, x, y, leapfrog=leapfrog)
        xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        got = torch.autograd.grad(toy_loss(*edict_chain(xl, yl, spec(steps, leapfrog=leapfrog))), (xl, yl))
        assert all(float((g - w).norm() / w.norm()) <= 1e-10 for g, w in zip(got, want))


def test_gradcheck_on_a_two_step_chain():
    x, y = rand(1, 4, 4, 4, seed=5).requires_grad_(True), rand(1, 4, 4, 4, seed=6).requires_grad_(True)
    s = ChainSpec(DEN, torch.tensor([3.0, 1.0, 0.0], dtype=F64))
    assert torch.autograd.gradcheck(lambda a, b: edict_chain(a, b, s), (x, y), eps=1e-6, atol=1e-7)


def saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_saved_memory_does_not_grow_with_the_step_count():
    x, y = rand(1, 4, 6, 6, seed=1), rand(1, 4, 6, 6, seed=2)

    def ours(steps, mode="reversible"):
        xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        return saved_bytes(lambda: edict_chain(xl, yl, spec(steps, mode)))[0]

    def naive(steps):
        xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        return saved_bytes(lambda: edict.edict_sample(DEN, xl, yl, edict.official_sigmas(SIGMAS, steps)))[0]
    latent = x.numel() * 8
    assert ours(5) == ours(50) == 2 * latent              # only (x_0, y_0)
    assert naive(50) > 8 * naive(5) > 0                     # naive keeps every step's activations
    assert ours(50, "checkpoint") - ours(5, "checkpoint") == 45 * 2 * latent  # 2 latents per step


# --- the optimisation loop -----------------------------------------------------------------------------------------

DEC_W = rand(3, 4, 1, 1, seed=20)
CLF_W = rand(5, 3, seed=21)


def decode_classify(z0, target=2):
    """A tiny decoder (1×1 conv + sigmoid) and a 5-class linear classifier on mean colour: cross-entropy to target."""
    img = torch.sigmoid(torch.nn.functional.conv2d(z0, DEC_W))
    logits = img.mean(dim=(2, 3)) @ CLF_W.T * 4
    return torch.nn.functional.cross_entropy(logits, torch.tensor([target]))


def run(iterations=20, seed=0, **kw):
    cfg = DOODLConfig(**dict(dict(iterations=iterations, lr=1.0, grad_clip=1e-2), **kw))
    x = rand(1, 4, 6, 6, seed=30)
    y = x.clone() if cfg.tie else rand(1, 4, 6, 6, seed=31)
    return doodl_optimize(spec(10), pair_loss_gradients(decode_classify), x, y, cfg,
                          torch.Generator().manual_seed(seed)), x, y


def test_the_loss_falls_and_the_invariants_hold_every_iteration():
    seen = []
    cfg = DOODLConfig(iterations=20, lr=1.0, grad_clip=1e-2)
    x = rand(1, 4, 6, 6, seed=30)
    n0 = x.norm()

    def on_iteration(step):
        seen.append((step.i, step.loss))
    res = doodl_optimize(spec(10), pair_loss_gradients(decode_classify), x, x.clone(), cfg,
                         torch.Generator().manual_seed(0), on_iteration)
    assert res.losses[-1] < 0.8 * res.losses[0], res.losses
    assert res.x is res.y and abs(float(res.x.norm() / n0) - 1) < 1e-12
    assert all(float(sx.abs().max()) <= 1e-2 and torch.equal(sx, sy) for sx, sy in res.steps)
    assert [i for i, _ in seen] == list(range(21)) and len(res.losses) == 21


def test_momentum_recursion_without_noise_or_renormalisation():
    res, x, _ = run(8, perturb_std=0.0, renormalize=False)
    buf, expect = None, x.clone()
    for sx, _ in res.steps:
        buf = sx if buf is None else 0.9 * buf + sx
        expect = expect + buf
    torch.testing.assert_close(res.x, expect, rtol=0, atol=1e-14)


def test_same_seed_same_result_other_seed_other_result():
    a, b, c = run(5, seed=1)[0], run(5, seed=1)[0], run(5, seed=2)[0]
    assert torch.equal(a.x, b.x) and a.losses == b.losses
    assert not torch.equal(a.x, c.x)


def test_an_inverted_pair_stays_untied_and_off_the_shell():
    res, x, y = run(5, tie=False, renormalize=False, perturb_std=0.0)
    assert not torch.equal(res.x, res.y)
    assert float(res.x.norm()) != pytest.approx(float(x.norm()), rel=1e-9)
    assert res.losses[-1] < res.losses[0]


def test_keep_best_returns_the_lowest_loss_iterate():
    res = run(6, keep="best", lr=50.0, grad_clip=0.5)[0]  # big steps: the loss is not monotone
    assert res.losses[res.best_iteration] == min(res.losses)


def decode_classify_each(z0, target=2):
    """decode_classify per image: [B] cross-entropies."""
    img = torch.sigmoid(torch.nn.functional.conv2d(z0, DEC_W))
    logits = img.mean(dim=(2, 3)) @ CLF_W.T * 4
    return torch.nn.functional.cross_entropy(logits, torch.full((z0.shape[0],), target), reduction="none")


@pytest.mark.parametrize("kw", [dict(), dict(keep="best", lr=50.0, grad_clip=0.5),
                                dict(tie=False, renormalize=False, shared_step=True)],
                         ids=["generation", "keep best", "inverted pair"])
def test_each_image_of_a_batch_is_optimised_as_it_is_alone(kw):
    """Issue 29, item 7: per-image losses, norms, perturbations and best iterates; the batch's first image is the
    image optimised alone (up to the toy denoiser's batched float64 arithmetic), and the second differs from it."""
    cfg = DOODLConfig(**dict(dict(iterations=6, lr=1.0, grad_clip=1e-2), **kw))
    xs = torch.cat([rand(1, 4, 6, 6, seed=30), rand(1, 4, 6, 6, seed=32) * 3])
    ys = xs.clone() if cfg.tie else xs + 0.01 * rand(2, 4, 6, 6, seed=33)

    def go(x, y, seeds):
        return doodl_optimize(spec(10), pair_loss_gradients(decode_classify_each), x, y, cfg,
                              [torch.Generator().manual_seed(s) for s in seeds])
    both = go(xs, ys, [5, 6])
    for i, seed in enumerate([5, 6]):
        alone = go(xs[i:i + 1], ys[i:i + 1], [seed])
        for a, b in ((both.x[i], alone.x[0]), (both.y[i], alone.y[0]), (both.x0[i], alone.x0[0])):
            assert float((a - b).abs().max() / b.abs().max()) < 1e-12
        if "keep" in kw:
            assert both.best_of[i] == alone.best_iteration
    assert float((both.x[0] - both.x[1]).abs().max()) > 0.1


def test_a_batch_mean_loss_would_couple_the_images():
    """The planted coupling: a loss that averages the batch scales each image's step by 1/B (then clipped), so the
    first image of a batch is not the image alone; the per-image loss above is."""
    cfg = DOODLConfig(iterations=4, lr=1.0, grad_clip=1e-1, perturb_std=0.0)
    xs = torch.cat([rand(1, 4, 6, 6, seed=30), rand(1, 4, 6, 6, seed=32)])
    both = doodl_optimize(spec(10), pair_loss_gradients(lambda z: decode_classify_each(z).mean()), xs, xs.clone(),
                          cfg)
    alone = doodl_optimize(spec(10), pair_loss_gradients(lambda z: decode_classify_each(z).mean()), xs[:1],
                           xs[:1].clone(), cfg)
    assert float((both.x[0] - alone.x[0]).abs().max()) > 1e-4


def test_a_non_finite_loss_stops_with_a_clear_error():
    def bad(x0, y0):
        return float("nan"), torch.zeros_like(x0), torch.zeros_like(y0)
    with pytest.raises(FloatingPointError, match="lower lr"):
        doodl_optimize(spec(3), bad, rand(1, 4, 6, 6), rand(1, 4, 6, 6), DOODLConfig(iterations=2))


# --- losses and classifiers ------------------------------------------------------------------------------------------

def test_spherical_distance_values():
    from invedit.losses.pixel import spherical_distance
    u = torch.tensor([[1.0, 0.0, 0.0]])
    assert float(spherical_distance(u, 3 * u)) == 0.0
    assert abs(float(spherical_distance(u, -u)) - torch.pi ** 2 / 2) < 1e-6
    assert abs(float(spherical_distance(u, torch.tensor([[0.0, 1.0, 0.0]]))) - 2 * (torch.pi / 4) ** 2) < 1e-6


def test_multicrop_shapes_and_determinism():
    from invedit.losses.pixel import multicrop
    img = torch.rand(2, 3, 64, 48)
    out = multicrop(img, 8, 16, 0.3, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 16, 16)
    assert multicrop(img, 0, 16, 0.3).shape == (2, 3, 16, 16)

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(multicrop(img, 4, 16, 0.3, g1), multicrop(img, 4, 16, 0.3, g2))


def test_classifier_files_load_by_declared_architecture_and_refuse_pickles(tmp_path):
    import json as _json
    from safetensors.torch import save_file
    from invedit import artifacts
    from invedit.losses import classifiers
    m = classifiers.SmallCNN(3, width=8)
    save_file(m.state_dict(), str(tmp_path / "c.safetensors"), metadata={"classes": _json.dumps(["a", "b", "c"]),
                                                                          "width": "8"})
    loaded, classes = artifacts.classifier.load_classifier(tmp_path / "c.safetensors", "small_cnn", None, "test")
    x = torch.rand(2, 3, 32, 32)
    assert classes == ["a", "b", "c"] and torch.equal(loaded(x), m(x))
    with pytest.raises(ValueError, match="does not fit a resnet18"):
        artifacts.classifier.load_classifier(tmp_path / "c.safetensors", "resnet18", None, "test")
    (tmp_path / "p.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickled files are refused"):
        artifacts.classifier.load_classifier(tmp_path / "p.pt", "small_cnn", None, "test")


def test_classifier_loss_reduces_over_crops_and_weights():
    from invedit.losses.pixel import ClassifierLoss, WeightedSum
    m = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    img = torch.rand(1, 3, 16, 16)
    ce = ClassifierLoss(m, 1, crops=0, crop_size=16, weight=2.0)
    want = 2.0 * torch.nn.functional.cross_entropy(m(img), torch.tensor([1]))
    torch.testing.assert_close(ce(img), want)
    torch.testing.assert_close(WeightedSum([(ce, 0.5), (ce, 1.0)])(img), 1.5 * want)
    lo = ClassifierLoss(m, 1, crops=6, crop_size=8, reduction="min")(img, torch.Generator().manual_seed(0))
    mean = ClassifierLoss(m, 1, crops=6, crop_size=8, reduction="mean")(img, torch.Generator().manual_seed(0))
    assert float(lo.detach()) <= float(mean.detach())


def test_one_step_guidance_is_euler_at_scale_zero_and_follows_the_gradient():
    from invedit.optim.doodl import one_step_guidance_sample
    x = rand(1, 4, 6, 6, seed=40) * 14.6
    sig = edict.official_sigmas(SIGMAS, 8)[:-1]  # 8 steps ending at σ(0) > 0
    plain = x.clone()
    for i in range(sig.numel() - 1):
        d = DEN(plain, sig[i])
        plain = plain + (sig[i + 1] - sig[i]) * (plain - d) / sig[i]
    assert torch.equal(one_step_guidance_sample(DEN, lambda d: d.sum(), x, sig, 0.0), plain)
    uncond = sigma_denoiser(CFGEps(g=0.0))
    guided = one_step_guidance_sample(DEN, decode_classify, x, sig, 5.0, uncond_denoiser=uncond)
    assert float(decode_classify(guided)) < float(decode_classify(plain))


@pytest.mark.parametrize("with_uncond", [True, False])
def test_one_step_guidance_differentiates_the_official_blend_of_the_uncond_prediction(with_uncond):
    """The official baseline (DOODL doodl.py, get_generic_cond_fn, one_step_baseline=True): the loss scores
    s = fac·x̂0_u + (1 − fac)·z (z = x/sqrt(1+σ²), fac = sqrt(1 − ᾱ) = σ/sqrt(1+σ²)), x̂0_u the *unconditional*
    prediction, and the step's D is pushed by −λ·σ²·∇_x L. With a linear D_u(x) = a·x and a linear loss ⟨w, s⟩ the
    gradient is (fac·a + (1 − fac)/sqrt(1+σ²))·w, whatever the guided (CFG) prediction; without an uncond prediction
    (a guider with no negative) the guided one is differentiated. The old code differentiated ⟨w, D_cfg(x)⟩."""
    from invedit.optim.doodl import one_step_guidance_sample
    a, lam = 0.7, 3.0
    w = rand(1, 4, 6, 6, seed=41)
    x = rand(1, 4, 6, 6, seed=42) * 5.0
    sig = torch.tensor([4.0, 2.5], dtype=F64)
    s0, s1 = float(sig[0]), float(sig[1])

    def linear(xx, sigma):
        return a * xx
    guided_model = DEN if with_uncond else linear
    got = one_step_guidance_sample(guided_model, lambda z: (w * z).sum(), x, sig, lam,
                                   uncond_denoiser=linear if with_uncond else None)
    fac, vp = s0 / (1 + s0 ** 2) ** 0.5, (1 + s0 ** 2) ** -0.5
    grad = (fac * a + (1 - fac) * vp) * w
    d_tilde = guided_model(x, sig[0]) - lam * s0 ** 2 * grad
    want = x + (s1 - s0) * (x - d_tilde) / s0
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


def test_shared_steps_keep_an_untied_pairs_difference():
    res, x, y = run(4, tie=False, renormalize=False, shared_step=True)
    torch.testing.assert_close(res.x - res.y, x - y, rtol=0, atol=1e-13)
    assert not torch.equal(res.x, x)


def test_aesthetic_loss_scores_with_a_linear_head():
    from invedit.losses.pixel import AestheticLoss

    class Stub:  # an image encoder giving the unit vector along the mean colour
        size, device = 8, "cpu"

        def image_features(self, crops):
            return torch.nn.functional.normalize(crops.mean(dim=(2, 3)), dim=-1)
    w, b = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([4.0])
    red, blue = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    loss = AestheticLoss(Stub(), w, b, target=10.0, crops=0)
    assert float(loss(red)) == pytest.approx(3.0) and float(loss(blue)) == pytest.approx(6.0)  # |7 − 10|, |4 − 10|
    assert float(AestheticLoss(Stub(), w, b, target=0.0, crops=0)(red)) == pytest.approx(-7.0)  # maximise
    with pytest.raises(ValueError, match="takes 4-d embeddings"):
        AestheticLoss(Stub(), torch.ones(1, 4), b, crops=0)(red)
    Stub.dim = 3  # an encoder that states its embedding size (a LocalCLIP) refuses the head when it is made
    with pytest.raises(ValueError, match="takes 4-d embeddings, this CLIP gives 3; use the head made for this CLIP"):
        AestheticLoss(Stub(), torch.ones(1, 4), b, crops=0)
