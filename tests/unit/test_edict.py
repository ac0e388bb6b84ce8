"""EDICT math (samplers/edict.py): exact inverses, whole-chain round trips, precision, leapfrog parity, and parity
with a literal re-implementation of the reference code's loop in VP coordinates with integer timesteps."""
import pytest
import torch

from invedit.samplers import coords, ddim, edict

from tinynets import F64, CFGEps, TinyEps, sd15_alphas_cumprod, sd15_sigmas, sigma_denoiser

AB = sd15_alphas_cumprod()
SIGMAS = sd15_sigmas()


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def official(steps=50, strength=1.0):
    return edict.official_sigmas(SIGMAS, steps, strength)


def maxabs(a, b):
    return float((a.double() - b.double()).abs().max())


DEN = sigma_denoiser(CFGEps(g=5.0))  # CFG-like ε with guidance 5 (the ill-conditioned case for DDIM inversion)


def generate_then_invert(p=0.93, leapfrog=True, steps=50, state=F64, model_dtype=None, scaling=True, seed=1):
    """x_T = y_T = noise -> sample -> invert -> compare with the noise (the ill-conditioned direction, × p^-2T)."""
    noise = rand(1, 4, 16, 16, seed=seed)
    sig = official(steps)
    kw = dict(p=p, leapfrog=leapfrog, official_input_scaling=scaling, state_dtype=state, model_dtype=model_dtype)
    x0, y0 = edict.edict_sample(DEN, noise, noise, sig, **kw)
    xT, yT = edict.edict_invert(DEN, x0, y0, sig, **kw)
    return max(maxabs(xT, noise), maxabs(yT, noise))


def invert_then_generate(p=0.93, leapfrog=True, steps=50, state=F64, strength=1.0, seed=2):
    """image latent -> invert -> sample -> compare with the image latent (the editing direction)."""
    z0 = rand(1, 4, 16, 16, seed=seed) * 0.8
    sig = official(steps, strength)
    kw = dict(p=p, leapfrog=leapfrog, state_dtype=state)
    xT, yT = edict.edict_invert(DEN, z0, z0, sig, **kw)
    assert maxabs(xT, z0) > 0.3  # the inversion really moved the latent
    x0, y0 = edict.edict_sample(DEN, xT, yT, sig, **kw)
    return max(maxabs(x0, z0), maxabs(y0, z0))


# --- single layers ------------------------------------------------------------------------------------------------

def test_step_coefficients_are_the_ddim_update_in_vp_coordinates():
    """a = sqrt(ᾱ'/ᾱ), b = sqrt(1−ᾱ') − sqrt(ᾱ'(1−ᾱ)/ᾱ); σ' = 0 gives (sqrt(1+σ²), −σ); σ' = σ the identity."""
    for t, t_prev in [(980, 960), (500, 480), (20, 0), (999, 0)]:
        a, b = edict.step_coefficients(SIGMAS[t], SIGMAS[t_prev])
        ab, abp = AB[t], AB[t_prev]
        assert float(a) == pytest.approx(float((abp / ab).sqrt()), rel=1e-13)
        assert float(b) == pytest.approx(float((1 - abp).sqrt() - (abp * (1 - ab) / ab).sqrt()), rel=1e-12)
    s = torch.tensor(3.5, dtype=F64)
    a, b = edict.step_coefficients(s, torch.tensor(0.0, dtype=F64))
    assert float(a) == pytest.approx((1 + 3.5 ** 2) ** 0.5) and float(b) == -3.5
    a, b = edict.step_coefficients(s, s)
    assert float(a) == 1.0 and float(b) == 0.0


def test_mixing_layer_inverse_is_exact():
    x, y = rand(2, 4, 8, 8, seed=1), rand(2, 4, 8, 8, seed=2)
    for p in (0.5, 0.9, 0.93, 1.0):
        xm, ym = edict.mix(x, y, p)
        assert maxabs(xm, x) > 1e-3 or p == 1.0
        xr, yr = edict.unmix(xm, ym, p)
        assert maxabs(xr, x) <= 1e-13 and maxabs(yr, y) <= 1e-13


def test_mixing_layer_is_the_papers_equations():
    x, y, p = rand(4, seed=3), rand(4, seed=4), 0.93
    xm, ym = edict.mix(x, y, p)
    torch.testing.assert_close(xm, p * x + (1 - p) * y, rtol=0, atol=0)
    torch.testing.assert_close(ym, p * y + (1 - p) * xm, rtol=0, atol=0)  # uses the *new* x


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("scaling", [True, False])
@pytest.mark.parametrize("levels", [(960, 940), (20, 0)])
def test_single_step_inverse_is_exact(swap, scaling, levels):
    eps = edict.EpsFromDenoiser(DEN, None)
    s, s_next = SIGMAS[levels[0]], SIGMAS[levels[1]]
    x, y = rand(1, 4, 8, 8, seed=5), rand(1, 4, 8, 8, seed=6)
    xn, yn = edict.edict_step(eps, x, y, s, s_next, 0.93, swap, scaling)
    assert maxabs(xn, x) > 1e-3
    xr, yr = edict.edict_step_inverse(eps, xn, yn, s, s_next, 0.93, swap, scaling)
    assert maxabs(xr, x) <= 1e-13 and maxabs(yr, y) <= 1e-13


def test_final_zero_sigma_step_gives_the_x0_prediction():
    """σ -> 0 without mixing (p = 1): x' = sqrt(1+σ²)·x − σ·ε(y) = the x0 estimate of the σ-space denoiser."""
    eps = edict.EpsFromDenoiser(DEN, None)
    s = SIGMAS[20]
    x = rand(1, 4, 8, 8, seed=7)
    xn, _ = edict.edict_step(eps, x, x, s, torch.tensor(0.0, dtype=F64), 1.0, False)
    torch.testing.assert_close(xn, DEN(coords.vp_to_x(x, s), s), rtol=1e-12, atol=1e-12)


# --- whole chains -------------------------------------------------------------------------------------------------

def test_generate_then_invert_is_exact_in_float64():
    assert generate_then_invert() <= 1e-9


def test_invert_then_generate_is_exact_in_float64():
    assert invert_then_generate() <= 1e-11


@pytest.mark.parametrize("steps", [45, 49, 50, 7])
@pytest.mark.parametrize("leapfrog", [True, False])
def test_odd_and_even_step_counts_with_and_without_leapfrog_are_exact(steps, leapfrog):
    assert generate_then_invert(steps=steps, leapfrog=leapfrog) <= 1e-9
    assert invert_then_generate(steps=steps, leapfrog=leapfrog) <= 1e-11


@pytest.mark.parametrize("strength", [0.8, 0.9, 0.45])
def test_partial_strength_round_trip_is_exact(strength):
    """strength 0.9 of 50 = 45 steps: the case the diffusers community pipeline's inversion gets wrong."""
    assert len(official(50, strength)) - 1 == int(50 * strength)  # the last of them the identity step
    assert invert_then_generate(strength=strength) <= 1e-11


def test_both_input_scalings_are_exact():
    assert generate_then_invert(scaling=False) <= 1e-9


def test_float64_state_with_a_half_precision_model_is_still_exact():
    """The model may run in fp16/bf16: ε depends only on the other copy, so the state stays exactly invertible."""
    for model_dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert generate_then_invert(model_dtype=model_dtype, steps=20) <= 1e-9, model_dtype


def test_float32_state_is_worse_but_bounded():
    """The spec's bounds: gen→inv ≤ 1e-2 (amplified by p^-2T), inv→gen ≤ 1e-4 (well conditioned)."""
    e64, e32 = generate_then_invert(), generate_then_invert(state=torch.float32)
    assert e32 <= 1e-2 and e32 > 100 * e64
    assert invert_then_generate(state=torch.float32) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_state_is_refused(dtype):
    z = rand(1, 4, 4, 4)
    with pytest.raises(ValueError, match="half precision"):
        edict.edict_sample(DEN, z, z, official(5), state_dtype=dtype)
    with pytest.raises(ValueError, match="half precision"):
        edict.edict_invert(DEN, z, z, official(5), state_dtype=dtype)


def test_error_grows_as_p_falls():
    """Inversion expands x − y by p^-2 per step: e(0.90) > 10·e(0.97)."""
    assert generate_then_invert(p=0.90) > 10 * generate_then_invert(p=0.97)


def test_ddim_inversion_is_far_less_exact_than_edict():
    z0 = rand(1, 4, 16, 16, seed=2) * 0.8
    sig = official(50)
    ddim_sig = torch.cat([sig[:-1], torch.zeros(1, dtype=F64)])  # DDIM needs strictly monotone levels
    rec = ddim.ddim_sample(DEN, ddim.ddim_invert(DEN, z0, ddim_sig), ddim_sig)
    assert maxabs(rec, z0) >= 1e3 * invert_then_generate()


def test_p1_without_mixing_lets_x_and_y_drift_apart():
    noise = rand(1, 4, 16, 16, seed=1)
    sig = official(50)
    x1, y1 = edict.edict_sample(DEN, noise, noise, sig, p=1.0)
    x9, y9 = edict.edict_sample(DEN, noise, noise, sig, p=0.93)
    assert maxabs(x1, y1) > 10 * maxabs(x9, y9)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([1.0]), "at least two"),
    (torch.tensor([0.0, 1.0, 2.0]), "strictly descending"),
    (torch.tensor([3.0, 3.0, 1.0]), "strictly descending"),
    (torch.tensor([2.0, float("nan")]), "finite"),
])
def test_bad_sigmas_are_refused(bad, match):
    z = rand(1, 4, 2, 2)
    with pytest.raises(ValueError, match=match):
        edict.edict_sample(DEN, z, z, bad.double())


def test_bad_p_is_refused():
    z = rand(1, 4, 2, 2)
    with pytest.raises(ValueError, match="mixing weight p"):
        edict.edict_invert(DEN, z, z, official(3), p=0.0)


def test_official_timesteps():
    assert edict.official_timesteps(50)[:3] == [980, 960, 940] and edict.official_timesteps(50)[-1] == 0
    assert len(edict.official_timesteps(50, strength=0.8)) == 40
    sig = official(50)
    assert len(sig) == 51 and sig[-1] == sig[-2] == SIGMAS[0]
    assert float(edict.end_sigma(sig)) == 0.0 and float(edict.end_sigma(sig[:-1])) == float(SIGMAS[0])


# --- parity with the reference algorithm ----------------------------------------------------------------------------

def reference_edict(eps, latent_pair, timesteps, p, leapfrog, reverse):
    """The reference code's loop, written from the paper's equations and the official loop structure: VP latents,
    integer timesteps, DDIM with set_alpha_to_one=False (t = 0 steps to ᾱ_0, the identity), mixing after the two
    sub-steps in generation and before them in inversion, leapfrog by the forward index."""
    def coeffs(t):
        abt, abp = AB[t], (AB[t - 20] if t >= 20 else AB[0])  # 50 steps: stride 20
        return (abp / abt).sqrt(), (1 - abp).sqrt() - (abp * (1 - abt) / abt).sqrt()
    pair = [z.clone() for z in latent_pair]
    ts = list(reversed(timesteps)) if reverse else list(timesteps)
    n = len(ts)
    for i, t in enumerate(ts):
        a, b = coeffs(t)
        if reverse:
            pair[1] = (pair[1] - (1 - p) * pair[0]) / p
            pair[0] = (pair[0] - (1 - p) * pair[1]) / p
        for k in range(2):
            if reverse:
                orig_i = n - (i + 1)
                li = (k + ((orig_i + 1) % 2 if leapfrog else 1)) % 2
            else:
                li = (k + (i % 2 if leapfrog else 0)) % 2
            e = eps(pair[1 - li], t)
            pair[li] = (pair[li] - b * e) / a if reverse else a * pair[li] + b * e
        if not reverse:
            x_new = p * pair[0] + (1 - p) * pair[1]
            pair = [x_new, (1 - p) * x_new + p * pair[1]]
    return pair


@pytest.mark.parametrize("leapfrog", [True, False])
@pytest.mark.parametrize("strength", [1.0, 0.9])
def test_comfy_space_chain_matches_the_reference_loop(leapfrog, strength):
    eps_model = CFGEps(g=3.0)
    den = sigma_denoiser(eps_model)
    ts = edict.official_timesteps(50, strength=strength)
    sig = official(50, strength)
    noise = rand(1, 4, 16, 16, seed=9)
    ref = reference_edict(eps_model, [noise, noise], ts, 0.93, leapfrog, reverse=False)
    ours = edict.edict_sample(den, noise, noise, sig, p=0.93, leapfrog=leapfrog)
    assert maxabs(ours[0], ref[0]) <= 1e-11 and maxabs(ours[1], ref[1]) <= 1e-11
    ref_inv = reference_edict(eps_model, ref, ts, 0.93, leapfrog, reverse=True)
    ours_inv = edict.edict_invert(den, ours[0], ours[1], sig, p=0.93, leapfrog=leapfrog)
    assert maxabs(ours_inv[0], ref_inv[0]) <= 1e-9 and maxabs(ours_inv[1], ref_inv[1]) <= 1e-9


def test_without_official_input_scaling_the_chain_differs_from_the_reference():
    eps_model = CFGEps(g=3.0)
    den = sigma_denoiser(eps_model)
    noise = rand(1, 4, 16, 16, seed=9)
    ref = reference_edict(eps_model, [noise, noise], edict.official_timesteps(50), 0.93, True, reverse=False)
    ours = edict.edict_sample(den, noise, noise, official(50), official_input_scaling=False)
    assert maxabs(ours[0], ref[0]) > 1e-3


def test_callback_sees_every_step_in_order():
    seen = []
    z = rand(1, 4, 4, 4)
    sig = official(6)
    edict.edict_sample(DEN, z, z, sig, callback=lambda st: seen.append((st.i, st.denoised is None)))
    assert seen == [(i, i == 5) for i in range(6)]  # the final identity step makes no model call
    seen.clear()
    edict.edict_invert(DEN, z, z, sig, callback=lambda st: seen.append(st.i))
    assert seen == list(range(6))


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float16])
def test_round_trip_to_sigma_zero_is_exact_with_a_lower_precision_model(model_dtype):
    """A schedule ending at σ = 0 (ComfyUI's schedulers) with an image latent on the float32 grid and a float32 model:
    ε̂ must come from the state-precision model input, or the inverse lands model inputs on float32 rounding ties
    (regression: 4e-7 error on the real host before the fix)."""
    den = sigma_denoiser(CFGEps(g=3.0))
    sig = torch.cat([SIGMAS[torch.linspace(999, 0, 20).round().long()], torch.zeros(1, dtype=F64)])
    worst = 0.0
    for seed in range(4):
        z0 = (rand(1, 4, 16, 16, seed=seed) * 2.5).float().double()  # values a float32 VAE latent can hold
        xT, yT = edict.edict_invert(den, z0, z0, sig, model_dtype=model_dtype)
        x0, y0 = edict.edict_sample(den, xT, yT, sig, model_dtype=model_dtype)
        worst = max(worst, maxabs(x0, z0), maxabs(y0, z0))
    assert worst <= 1e-11, worst


def test_the_official_schedule_matches_the_reference_code_only_for_step_counts_dividing_1000():
    for steps in (10, 20, 25, 50):
        assert edict.reference_code_timesteps(steps) == edict.official_timesteps(steps)
    ref = edict.reference_code_timesteps(30)
    assert len(ref) == 31 and ref[0] == 990 and len(edict.official_timesteps(30)) == 30


def test_an_inversion_past_its_amplification_bound_is_refused_before_any_model_call():
    """Issue 30, item 1: the inverse mixing multiplies the pair's difference by p⁻² a step, so a long inversion drives
    the latents past what a float32 model evaluates (NaN after minutes at 400 steps on the shapes world). At the
    bound the inversion runs (finite, here on the float64 toy); one step more is refused before the first model call,
    naming the steps p allows and a p that allows more."""
    p = 0.93
    n = edict.max_inversion_steps(p)
    assert n == 253 and edict.inversion_amplification(p, n) <= edict.MAX_AMPLIFICATION
    assert edict.inversion_amplification(p, n + 1) > edict.MAX_AMPLIFICATION
    calls = []

    def counting(x, sigma):
        calls.append(1)
        return DEN(x, sigma)
    z0 = rand(1, 4, 4, 4, seed=3)
    xT, yT = edict.edict_invert(counting, z0, z0, torch.linspace(14.6, 0.03, n + 1, dtype=F64), p=p)
    assert torch.isfinite(xT).all() and torch.isfinite(yT).all() and len(calls) == 2 * n
    calls.clear()
    with pytest.raises(ValueError, match=r"254 steps at mix_p 0.93: EDICT's inverse mixing multiplies the difference of "
                                         r"its pair by p⁻² = 1.156 a step, 1.0e\+16 over the chain.*use at most 253 "
                                         r"steps at mix_p 0.93, or raise mix_p to 0.931 or more for 254 steps"):
        edict.edict_invert(counting, z0, z0, torch.linspace(14.6, 0.03, n + 2, dtype=F64), p=p)
    assert calls == []
    assert edict.max_inversion_steps(1.0) > 10 ** 6   # p = 1: no mixing, nothing amplified
