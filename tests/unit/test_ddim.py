"""DDIM step / inversion math (samplers/ddim.py) against closed forms and diffusers' DDIMInverseScheduler."""
import pytest
import torch

from invedit.samplers import coords, ddim

from tinynets import F64, TinyEps, sd15_alphas_cumprod, sigma_denoiser


def test_ddim_step_matches_closed_form_in_vp_space():
    """x_{σ'} = x_σ + (σ'−σ)ε  <=>  z' = sqrt(ᾱ')·x̂0 + sqrt(1−ᾱ')·ε,  x̂0 = (z − sqrt(1−ᾱ)ε)/sqrt(ᾱ)."""
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(1, 4, 8, 8, generator=g, dtype=F64), torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    ab = sd15_alphas_cumprod()
    for t, t_next in [(980, 960), (500, 480), (21, 1), (1, 21), (480, 500)]:  # both directions
        a, a_next = ab[t], ab[t_next]
        s, s_next = coords.sigma_from_alpha_bar(a), coords.sigma_from_alpha_bar(a_next)
        x0_hat = (z - (1 - a).sqrt() * eps) / a.sqrt()
        z_closed = a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps
        x_next = ddim.ddim_step(coords.vp_to_x(z, s), eps, s, s_next)
        torch.testing.assert_close(coords.x_to_vp(x_next, s_next), z_closed, rtol=1e-12, atol=1e-12)


def test_inverse_eps_is_the_model_on_the_current_vp_latent_at_the_next_level():
    ab = sd15_alphas_cumprod()
    net = TinyEps(3)
    D = sigma_denoiser(net, ab)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    s, s_next = coords.sigma_from_alpha_bar(ab[400]), coords.sigma_from_alpha_bar(ab[420])
    eps, _ = ddim.ddim_inverse_eps(D, coords.vp_to_x(z, s), s, s_next)
    torch.testing.assert_close(eps, net(z, 420), rtol=1e-12, atol=1e-12)


def test_inversion_is_exact_when_eps_does_not_depend_on_x():
    """D(x, σ) = x − σ·c(σ) is linear in x with an x-independent ε̂ = c(σ): invert → sample returns the input."""
    g = torch.Generator().manual_seed(4)
    c = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)

    def D(x, sigma):
        return x - sigma * c * torch.cos(sigma)

    sigmas = torch.cat([torch.linspace(14.6, 0.03, 25, dtype=F64), torch.zeros(1, dtype=F64)])
    x0 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    xT = ddim.ddim_invert(D, x0, sigmas)
    assert (xT - x0).abs().max() > 1.0  # it did move the latent
    torch.testing.assert_close(ddim.ddim_sample(D, xT, sigmas), x0, rtol=0, atol=1e-12)


def test_inversion_error_is_first_order_for_the_gaussian_denoiser():
    """Data N(μ, s²): the ideal denoiser D(x,σ) = μ + s²/(s²+σ²)(x−μ) is linear in x but ε̂ depends on x, so DDIM
    inversion is only approximate; its round-trip error must shrink ~linearly with the step size (first order)."""
    g = torch.Generator().manual_seed(5)
    mu, s2 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64), 0.5

    def D(x, sigma):
        return mu + s2 / (s2 + sigma ** 2) * (x - mu)

    x0 = mu + s2 ** 0.5 * torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    errs = []
    for n in (10, 20, 40, 80):
        sigmas = torch.cat([torch.exp(torch.linspace(torch.log(torch.tensor(14.6)), torch.log(torch.tensor(0.03)),
                                                     n, dtype=F64)), torch.zeros(1, dtype=F64)])
        rec = ddim.ddim_sample(D, ddim.ddim_invert(D, x0, sigmas), sigmas)
        errs.append(float((rec - x0).abs().max()))
    assert errs[0] > 1e-4  # not trivially exact
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.6 < coarse / fine < 2.6, errs  # halving the step halves the error


@pytest.mark.parametrize("steps,set_alpha_to_one", [(10, True), (25, False), (50, True)])
def test_trajectory_matches_diffusers_ddim_inverse_scheduler(steps, set_alpha_to_one):
    from diffusers import DDIMInverseScheduler

    sched = DDIMInverseScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=set_alpha_to_one,
                                 steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod.to(F64)
    net = TinyEps(7)
    g = torch.Generator().manual_seed(8)
    z0 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)

    ref = [z0]
    z = z0
    for t in sched.timesteps:
        z = sched.step(net(z, int(t)), int(t), z).prev_sample
        ref.append(z)

    # The same walk in ComfyUI σ-space: the starting level is ᾱ = 1 (σ = 0) or ᾱ_0, then σ(t) for each t.
    start = torch.zeros((), dtype=F64) if set_alpha_to_one else coords.sigma_from_alpha_bar(ab[0])
    levels = torch.cat([start[None], coords.sigma_from_alpha_bar(ab[sched.timesteps])])
    D = sigma_denoiser(net, ab)
    ours = [z0]
    ddim.ddim_invert(D, coords.vp_to_x(z0, levels[0]), levels.flip(0),  # given descending, as a scheduler's list
                     callback=lambda st: ours.append(coords.x_to_vp(st.x, st.sigma_next)))
    assert len(ours) == len(ref) == steps + 1
    for k, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, b.to(F64), rtol=1e-6, atol=1e-6, msg=f"step {k}")
    assert (ref[-1] - z0).abs().max() > 0.5


def test_ascending_and_descending_sigmas_give_the_same_inversion():
    ab = sd15_alphas_cumprod()
    D = sigma_denoiser(TinyEps(1), ab)
    sigmas = torch.cat([torch.linspace(14.6, 0.1, 12, dtype=F64), torch.zeros(1, dtype=F64)])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(ddim.ddim_invert(D, x0, sigmas), ddim.ddim_invert(D, x0, sigmas.flip(0)))


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([1.0]), "at least two"),
    (torch.tensor([1.0, float("nan"), 0.0]), "NaN"),
    (torch.tensor([3.0, 1.0, 2.0, 0.0]), "monotonic"),
    (torch.tensor([3.0, 1.0, 1.0, 0.5]), "only the lowest level may repeat"),
    (torch.tensor([1.0, 1.0]), "monotonic"),
    (torch.tensor([1.0, -0.5]), "non-negative"),
])
def test_bad_sigmas_are_refused_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match):
        ddim.ddim_invert(lambda x, s: x, torch.zeros(1, 4, 2, 2), bad)


def test_the_official_grids_repeated_lowest_level_is_an_identity_step():
    """Issue 30, item 2: Value Embedding Sigmas end with σ_min twice (the official grid); DDIM inversion takes them as
    they are (descending or flipped): the repeated level makes no model call and moves nothing."""
    ab = sd15_alphas_cumprod()
    calls = []
    D0 = sigma_denoiser(TinyEps(1), ab)

    def D(x, s):
        calls.append(float(s))
        return D0(x, s)
    strict = torch.linspace(14.6, 0.03, 7, dtype=F64)
    grid = torch.cat([strict, strict[-1:]])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = ddim.ddim_invert(D, x0, strict)
    n = len(calls)
    assert torch.equal(ddim.ddim_invert(D, x0, grid), ref) and len(calls) == 2 * n
    assert torch.equal(ddim.ddim_invert(D, x0, grid.flip(0)), ref)
