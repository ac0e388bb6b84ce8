"""Parity of EMS / CSDS with the paper's equations (no official code is public: ems_csds.md §6).

Reference: Shuai, Wu, Tang, Song, Shen, "Latent Space Disentanglement in Diffusion Transformers Enables Zero-shot
Fine-grained Semantic Editing", arXiv 2408.13335 v1 (shared/papers/001_9308dc7b3a2b0516.txt). Every reference below
is transcribed in float64 from the paper's text, never from the pack's code:

- Manipulate (§3.2 "Manipulate"): n = c1 − c0, c~ = c + α·n with c = c0; the pooled embedding alike,
  c~_pool = c_pool + α·(c1,pool − c0,pool). Several attributes (appendix text after Prop. 2): C = C0 + Λ(C1 − C0),
  Λ diagonal, one degree per attribute's block. Image side (§2.2, Fig. 3b): z_{t,α} = α·(z~_t − z_t) + z_t.
- Sample, CSDS (§3.2 "Sample", Eq. 2): ∂CSDS = ∂(‖ε_c~(z'_t) − ε_attr(z'_t)‖²_2 + λ·‖ε_c~(z'_t) − ε_c~(z_t)‖²_2),
  and "we do not require the gradient of the diffusion transformer … update the image embedding with
  z'_t = z_t − η·∂CSDS". Without the transformer's gradient (∂ε_c~/∂z'_t := I, ε_attr the target of the "predicted
  noise" ε_c~, the paper's wording) ∂CSDS = 2·(ε_c~ − ε_attr) + 2·λ·(ε_c~(z') − ε_c~(z_t)). With it (the pack's
  autograd mode), the chain rule: ∂CSDS = 2·J_c~ᵀ(ε_c~ − ε_attr) − 2·J_attrᵀ(ε_c~ − ε_attr) + 2·λ·J_c~ᵀ(ε_c~ − ε_ref),
  J_c = ∂ε_c/∂z' (taken here as explicit Jacobian matrices of the toy model, not through the loss).
- η (§5.3 "Update Stepsize"): "an adaptive stepsize strategy, starting with … 0.1 and gradually decreasing it to
  0.01". The shape of the decay is not given; the geometric interpolation η_k = 0.1·(0.01/0.1)^(k/(K−1)) is the
  spec's documented choice (ems_csds.md §2.5, "ours"), transcribed from the spec. λ 0.5 (the paper: 0.1–1.0).
- ε from the model: SD3 is a rectified flow, x = (1 − σ)·x0 + σ·ε and v = ε − x0, so ε = x + (1 − σ)·v; the pack
  gets ε from ComfyUI's x̂0 = x − σ·v instead (ε̂ = (x − (1 − σ)·x̂0)/σ), which the test feeds it.
- SDE (§3.1, Eq. 1): SDE = ‖x − h(f(x,t), c, t)‖_2 / ‖x − h(f(x,t), c~, t)‖_2 + ‖x − h(f(x,t), c~, t)‖_2.

Toy model: a seeded float64 flow velocity v(x, c, c_pool) = conv(tanh(conv(x) + A·mean(c) + B·c_pool)) + 0.2·tanh(x)
(nonlinear in x and in the conditioning), at σ0 = 0.9 (SD3's start at strength 0.75). Relative differences are
measured on the displacement z' − z_t (z_t itself is common to all). Tolerance 1e-10 (float64); every planted
mutation of a reference must move it by more than 1000× that.

Deliberate differences shown here with their size: the default direction ``toward_attribute`` (the first term's sign
flipped against the paper's wording; ``literal_order`` is the paper's), the geometric η decay (the paper does not say
which decay), κ = sqrt(1 + σ0²) on VE-scaled ε/v models (the paper uses SD3, a flow model, where κ = 1).
"""
import math

import pytest
import torch

from invedit.optim import csds

F64 = torch.float64
TOL = 1e-10
SIGMA0 = 0.9
SHAPE = (1, 4, 6, 6)


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b, scale):
    return float((a - b).norm() / scale.norm())


class ToyFlow:
    """v(x, c, c_pool) = conv2(tanh(conv1(x) + A·mean_tokens(c) + B·c_pool)) + 0.2·tanh(x), float64, seeded."""

    def __init__(self, seed=5, d=8, p=6):
        self.w1 = randn(12, 4, 3, 3, seed=seed) * 0.3
        self.w2 = randn(4, 12, 3, 3, seed=seed + 1) * 0.3
        self.a = randn(12, d, seed=seed + 2) * 0.5
        self.b = randn(12, p, seed=seed + 3) * 0.5

    def v(self, x, c, pool):
        bias = self.a @ c.mean(1)[0] + self.b @ pool[0]
        h = torch.tanh(torch.nn.functional.conv2d(x, self.w1, padding=1) + bias[None, :, None, None])
        return torch.nn.functional.conv2d(h, self.w2, padding=1) + 0.2 * torch.tanh(x)

    def eps_ref(self, x, cond):
        """The paper's noise prediction of a rectified flow: ε = x + (1 − σ)·v."""
        return x + (1 - SIGMA0) * self.v(x, *cond)

    def eps_pack(self, x, cond):
        """What the pack's adapter does: ε̂ from ComfyUI's x̂0 = x − σ·v (``csds.eps_from_x0``)."""
        return csds.eps_from_x0(x, x - SIGMA0 * self.v(x, *cond), 1 - SIGMA0, SIGMA0)


MODEL = ToyFlow()
# the source caption's tokens c0 and the target's c1 (the same caption, tokens 2–3 changed: the edited word), pooled
C0, P0 = randn(1, 7, 8, seed=11), randn(1, 6, seed=12)
C1, P1 = C0.clone(), randn(1, 6, seed=14)
C1[:, 2:4] = randn(1, 2, 8, seed=13)
CA, PA = randn(1, 3, 8, seed=15), randn(1, 6, seed=16)  # the attribute-only prompt ("purple coat"): its own length
Z0, NOISE = randn(*SHAPE, seed=17), randn(*SHAPE, seed=18)
ZT = (1 - SIGMA0) * Z0 + SIGMA0 * NOISE  # the forward process to σ0 (flow)
ALPHA, LAM, K = 1.3, 0.5, 50


# ---- references (the paper's equations) ---------------------------------------------------------------------------

def ref_manipulate(c0, c1, alpha, *, mutant=None):
    """§3.2: n = c1 − c0; c~ = c0 + α·n."""
    n = c1 - c0
    if mutant == "sign":
        return c0 - alpha * n
    if mutant == "anchor":  # the target as the anchor (an off-by-one of the endpoint)
        return c1 + alpha * n
    return c0 + alpha * n


def ref_eta(k, k_total, *, mutant=None):
    """§5.3: 0.1 at the start, 0.01 at the end; geometric in between (spec §2.5)."""
    u = k / (k_total - 1)
    if mutant == "off_by_one":
        u = (k + 1) / (k_total - 1)
    if mutant == "over_k":
        u = k / k_total
    return 0.1 * (0.01 / 0.1) ** u


def ref_csds_delta(eps, cond_t, cond_a, zt, lam, k_total, *, s=-1.0, mutant=None):
    """Eq. 2 without the transformer's gradient, z' ← z' − η_k·∂CSDS. s = −1: ∂CSDS = 2(ε_c~ − ε_attr) +
    2λ(ε_c~ − ε_ref) (the paper's wording: ε_c~ the predicted noise, ε_attr its target); s = +1 flips the first term
    (the pack's default direction)."""
    e_ref = eps(zt, cond_t)
    z = zt.clone()
    for k in range(k_total):
        e_t, e_a = eps(z, cond_t), eps(z, cond_a)
        two = 1.0 if mutant == "half" else 2.0
        lam_k = -lam if mutant == "lambda_sign" else lam
        grad = two * (-s) * (e_t - e_a) + two * lam_k * (e_t - e_ref)
        z = z - ref_eta(k, k_total, mutant=mutant if mutant in ("off_by_one", "over_k") else None) * grad
    return z


def jacobian(eps, z, cond):
    n = z.numel()
    return torch.autograd.functional.jacobian(lambda zz: eps(zz.reshape(z.shape), cond).reshape(n),
                                              z.reshape(n), vectorize=True)


def ref_csds_exact(eps, cond_t, cond_a, zt, lam, k_total, *, mutant=None):
    """Eq. 2's exact gradient by the chain rule with explicit Jacobians (the pack's autograd mode)."""
    e_ref = eps(zt, cond_t).reshape(-1)
    z = zt.clone().reshape(-1)
    for k in range(k_total):
        zz = z.reshape(zt.shape)
        e_t, e_a = eps(zz, cond_t).reshape(-1), eps(zz, cond_a).reshape(-1)
        j_t, j_a = jacobian(eps, zz, cond_t), jacobian(eps, zz, cond_a)
        r = e_t - e_a
        grad = 2 * j_t.T @ r + 2 * lam * j_t.T @ (e_t - e_ref)
        if mutant != "no_attr_jacobian":
            grad = grad - 2 * j_a.T @ r
        if mutant == "half":
            grad = grad / 2
        z = z - ref_eta(k, k_total) * grad
    return z.reshape(zt.shape)


def ref_sde(x, same, flipped, *, mutant=None):
    """Eq. 1 per image, ‖·‖_2 over all pixels; the mean over images (the paper's tables average SDE)."""
    out = []
    for i in range(x.shape[0]):
        d_same = (x[i] - same[i]).flatten().norm()
        d_flip = (x[i] - flipped[i]).flatten().norm()
        if mutant == "rmse":
            d_same, d_flip = d_same / math.sqrt(x[i].numel()), d_flip / math.sqrt(x[i].numel())
        if mutant == "inverted":
            out.append(d_flip / d_same + d_flip)
        elif mutant == "no_second_term":
            out.append(d_same / d_flip)
        else:
            out.append(d_same / d_flip + d_flip)
    return float(torch.stack(out).mean())


# ---- the pack -------------------------------------------------------------------------------------------------------

def pack_cond(alpha):
    return csds.manipulate(C0, C1, alpha), csds.manipulate(P0, P1, alpha)


def pack_refine(cond_t, cond_a, direction, mode, k_total=K, eps=None):
    eps = eps or MODEL.eps_pack
    predict = lambda z: (eps(z, cond_t), eps(z, cond_a))  # noqa: E731
    cfg = csds.CSDSConfig(iterations=k_total, lr_start=0.1, lr_end=0.01, lr_schedule="geometric", lam=LAM,
                          direction=direction, mode=mode)
    return csds.csds_refine(predict, ZT, cfg, step_scale=csds.kappa(True, SIGMA0)).z


# ---- tests ----------------------------------------------------------------------------------------------------------

MEASURED = {}  # the measured relative differences, printed by the last test (the parity table's rows)


def test_manipulation_tokens_pooled_and_image_side_match_the_paper():
    worst, caught = 0.0, {"sign": math.inf, "anchor": math.inf}
    for alpha in (0.5, ALPHA, -0.8, 2.5):
        want_c, want_p = ref_manipulate(C0, C1, alpha), ref_manipulate(P0, P1, alpha)
        got_c, got_p = pack_cond(alpha)
        scale = (C1 - C0)
        worst = max(worst, rel(got_c, want_c, scale), rel(got_p, want_p, P1 - P0))
        for mutant in caught:
            caught[mutant] = min(caught[mutant], rel(got_c, ref_manipulate(C0, C1, alpha, mutant=mutant), scale))
    MEASURED["manipulation (tokens, pooled), rel to ‖c1 − c0‖"] = worst
    MEASURED.update({f"manipulation mutant {k} (min over α)": v for k, v in caught.items()})
    assert worst < TOL and min(caught.values()) > 1000 * TOL
    # Fig. 3b: the reference image's latent, noised with the same ε, moved by α is z_t + α·(z~_t − z_t)
    z_ref = randn(*SHAPE, seed=19)
    noised = lambda z: (1 - SIGMA0) * z + SIGMA0 * NOISE  # noqa: E731
    zt_alpha = ALPHA * (noised(z_ref) - ZT) + ZT
    MEASURED["image side z_t + α(z~_t − z_t)"] = rel(noised(csds.manipulate(Z0, z_ref, ALPHA)), zt_alpha, zt_alpha - ZT)
    assert MEASURED["image side z_t + α(z~_t − z_t)"] < TOL


def test_several_attributes_are_c0_plus_lambda_times_the_block_directions():
    """C = C0 + Λ(C1 − C0): attribute k changes only its block (Prop. 2's model); the pack chains one Manipulate per
    attribute through ``base`` (c0 + Σ α_k(c1^(k) − c0))."""
    blocks, alphas = (slice(0, 2), slice(2, 4), slice(4, 7)), (0.7, -1.2, 1.9)
    targets = []
    c1_all = C0.clone()
    for i, b in enumerate(blocks):
        t = C0.clone()
        t[:, b] = randn(1, b.stop - b.start, 8, seed=30 + i)
        targets.append(t)
        c1_all[:, b] = t[:, b]
    lam_diag = torch.zeros(1, 7, 1, dtype=F64)
    for b, a in zip(blocks, alphas):
        lam_diag[:, b] = a
    want = C0 + lam_diag * (c1_all - C0)
    got = None
    for t, a in zip(targets, alphas):
        got = csds.manipulate(C0, t, a, base=got)
    MEASURED["several attributes C0 + Λ(C1 − C0)"] = rel(got, want, c1_all - C0)
    assert MEASURED["several attributes C0 + Λ(C1 − C0)"] < TOL


def test_the_eta_schedule_starts_at_the_papers_0_1_and_ends_at_0_01():
    etas = [csds.eta(k, K, 0.1, 0.01, "geometric") for k in range(K)]
    assert etas[0] == 0.1 and abs(etas[-1] - 0.01) < 1e-15 and all(a > b for a, b in zip(etas, etas[1:]))
    want = [ref_eta(k, K) for k in range(K)]
    MEASURED["η schedule"] = max(abs(a - b) / b for a, b in zip(etas, want))
    assert MEASURED["η schedule"] < TOL
    for mutant in ("off_by_one", "over_k"):
        bad = [ref_eta(k, K, mutant=mutant) for k in range(K)]
        MEASURED[f"η mutant {mutant} (max over k)"] = max(abs(a - b) / b for a, b in zip(etas, bad))
        assert MEASURED[f"η mutant {mutant} (max over k)"] > 1000 * TOL


def test_eps_from_the_flow_models_x0_is_the_papers_noise_prediction():
    cond = pack_cond(ALPHA)
    want = MODEL.eps_ref(ZT, cond)
    MEASURED["ε from x̂0 vs x + (1 − σ)·v"] = rel(MODEL.eps_pack(ZT, cond), want, want)
    assert MEASURED["ε from x̂0 vs x + (1 − σ)·v"] < TOL


def test_csds_delta_mode_is_eq2_without_the_transformers_gradient_at_the_papers_eta():
    """literal_order = the paper's wording; 50 iterations, η 0.1 → 0.01, λ 0.5, on the toy flow model."""
    cond_t, cond_a = (ref_manipulate(C0, C1, ALPHA), ref_manipulate(P0, P1, ALPHA)), (CA, PA)
    want = ref_csds_delta(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, K, s=-1.0)
    got = pack_refine(pack_cond(ALPHA), cond_a, "literal_order", "delta")
    shift = want - ZT
    assert float(shift.pow(2).mean().sqrt()) > 0.05  # the refinement really moves z_t
    d = rel(got, want, shift)
    MEASURED["delta (literal_order), z' − z_t over 50 iterations"] = d
    assert d < TOL, d
    for mutant in ("half", "lambda_sign", "off_by_one", "over_k"):
        m = rel(got, ref_csds_delta(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, K, s=-1.0, mutant=mutant), shift)
        MEASURED[f"delta mutant {mutant}"] = m
        assert m > 1000 * TOL, (mutant, m)
    m = rel(got, ref_csds_delta(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, K, s=+1.0), shift)  # sign of term 1
    MEASURED["delta mutant term-1 sign"] = m
    assert m > 1000 * TOL


def test_the_default_direction_is_the_first_terms_sign_flipped_a_documented_difference():
    """toward_attribute (the pack's default) is the reference with s = +1 exactly; against the paper's wording
    (literal_order) it differs by the size measured here."""
    cond_t, cond_a = (ref_manipulate(C0, C1, ALPHA), ref_manipulate(P0, P1, ALPHA)), (CA, PA)
    flipped = ref_csds_delta(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, K, s=+1.0)
    literal = ref_csds_delta(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, K, s=-1.0)
    got = pack_refine(pack_cond(ALPHA), cond_a, "toward_attribute", "delta")
    MEASURED["toward_attribute vs the reference with s = +1"] = rel(got, flipped, flipped - ZT)
    assert MEASURED["toward_attribute vs the reference with s = +1"] < TOL
    size = rel(got, literal, literal - ZT)
    MEASURED["toward_attribute vs the paper's wording (documented)"] = size
    # a different point, not a rescaled one: the two displacements point in nearly opposite directions
    cos = float(((flipped - ZT) * (literal - ZT)).sum() / ((flipped - ZT).norm() * (literal - ZT).norm()))
    MEASURED["cos(toward_attribute shift, literal_order shift)"] = cos
    assert size > 1.0 and cos < 0


def test_csds_autograd_mode_is_eq2s_exact_gradient_at_the_papers_eta():
    cond_t, cond_a = (ref_manipulate(C0, C1, ALPHA), ref_manipulate(P0, P1, ALPHA)), (CA, PA)
    k_total = 12
    want = ref_csds_exact(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, k_total)
    got = pack_refine(pack_cond(ALPHA), cond_a, "literal_order", "autograd", k_total)
    shift = want - ZT
    d = rel(got, want, shift)
    MEASURED["autograd, z' − z_t over 12 iterations"] = d
    assert d < TOL, d
    for mutant in ("half", "no_attr_jacobian"):
        m = rel(got, ref_csds_exact(MODEL.eps_ref, cond_t, cond_a, ZT, LAM, k_total, mutant=mutant), shift)
        MEASURED[f"autograd mutant {mutant}"] = m
        assert m > 1000 * TOL, (mutant, m)
    # the direction switch acts on the delta surrogate only: autograd descends Eq. 2 whatever it says
    other = pack_refine(pack_cond(ALPHA), cond_a, "toward_attribute", "autograd", k_total)
    assert rel(other, want, shift) < TOL


def test_the_two_modes_take_the_same_step_where_the_transformers_gradient_is_the_identity():
    """η means the same in both modes: on a model whose ε_c~ has ∂ε/∂z' = I and whose ε_attr does not depend on z'
    (the assumptions of the paper's gradient-free ∂CSDS), delta (literal_order) = autograd = the reference."""
    cond_t, cond_a = pack_cond(ALPHA), (CA, PA)
    fixed_attr = MODEL.eps_ref(ZT, cond_a)

    def eps_id(z, cond):  # ε_c~ = z + (1 − σ)·v(z_t, c~): identity Jacobian; ε_attr fixed; both nonlinear in c
        return fixed_attr if cond is cond_a else z + (1 - SIGMA0) * MODEL.v(ZT, *cond)
    want = ref_csds_delta(eps_id, cond_t, cond_a, ZT, LAM, K, s=-1.0)
    delta = pack_refine(cond_t, cond_a, "literal_order", "delta", eps=eps_id)
    auto = pack_refine(cond_t, cond_a, "literal_order", "autograd", eps=eps_id)
    d = max(rel(delta, want, want - ZT), rel(auto, want, want - ZT))
    MEASURED["delta = autograd = reference (identity Jacobian)"] = d
    assert d < TOL
    half = ref_csds_delta(eps_id, cond_t, cond_a, ZT, LAM, K, s=-1.0, mutant="half")
    assert rel(delta, half, want - ZT) > 1000 * TOL and rel(auto, half, want - ZT) > 1000 * TOL


def test_kappa_is_one_on_flow_models_and_the_ve_factor_elsewhere():
    """κ = 1 for SD3 (flow): the paper's step unchanged. On VE-scaled ε/v latents (SD1.5/SDXL, our extension) the
    step is multiplied by sqrt(1 + σ0²): 4.38 at the U-Net world's σ0 4.26 (strength 0.75)."""
    assert csds.kappa(True, SIGMA0) == 1.0
    assert csds.kappa(False, 4.26) == pytest.approx(math.sqrt(1 + 4.26 ** 2), rel=1e-15)
    MEASURED["κ at σ0 4.26 (VE, documented extension)"] = csds.kappa(False, 4.26)


def test_sde_default_is_eq1_with_the_l2_norm():
    g = torch.Generator().manual_seed(40)
    x, same, flipped = (torch.rand(3, 16, 16, 3, generator=g, dtype=F64) for _ in range(3))
    want = ref_sde(x, same, flipped)
    got = csds.sde(x, same, flipped)[0]
    d = abs(got - want) / want
    MEASURED["SDE (Eq. 1, l2 default)"] = d
    assert d < TOL
    for mutant in ("rmse", "inverted", "no_second_term"):
        m = abs(got - ref_sde(x, same, flipped, mutant=mutant)) / want
        MEASURED[f"SDE mutant {mutant}"] = m
        assert m > 1000 * TOL, mutant
    rmse = csds.sde(x, same, flipped, "rmse")[0]  # the option: the per-pixel form, the same ratio term
    assert abs(rmse - ref_sde(x, same, flipped, mutant="rmse")) / rmse < TOL


@pytest.fixture(scope="module", autouse=True)
def print_the_measured_table():
    """The figures of the parity table, printed after the module's tests (run with -s to see them)."""
    yield
    for k, v in MEASURED.items():
        print(f"EMS parity | {k} | {v:.3e}")
