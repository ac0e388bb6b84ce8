"""samplers/coords_flow.py against the closed form of the straight flow (issue 15's unit tests)."""
import pytest
import torch

from invedit.samplers import coords_flow as cf

F64 = torch.float64


def test_velocity_x0_and_eps_come_back_from_a_denoised_prediction():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 16, 4, 4, generator=g, dtype=F64), torch.randn(2, 16, 4, 4, generator=g, dtype=F64)
    for sigma in (0.05, 0.5, 0.97):
        x = cf.flow_point(x0, eps, sigma)
        v = eps - x0
        denoised = x - sigma * v  # ComfyUI's CONST.calculate_denoised of the true velocity
        torch.testing.assert_close(cf.velocity_from_denoised(x, denoised, sigma), v, rtol=0, atol=1e-12)
        torch.testing.assert_close(cf.x0_from_velocity(x, v, sigma), x0, rtol=0, atol=1e-12)
        torch.testing.assert_close(cf.eps_from_velocity(x, v, sigma), eps, rtol=0, atol=1e-12)


def test_euler_steps_along_a_straight_flow_are_exact_both_ways():
    """With the true (x-independent) velocity the Euler step lands on the line at any level, and the inversion's
    update (velocity taken at the current point, next level) takes it back: exact inversion."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 16, 4, 4, generator=g, dtype=F64), torch.randn(1, 16, 4, 4, generator=g, dtype=F64)
    v = eps - x0
    sigmas = torch.linspace(1.0, 0.0, 11, dtype=F64)
    x = cf.flow_point(x0, eps, sigmas[0])
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = cf.euler_step(x, v, s, s_next)
        torch.testing.assert_close(x, cf.flow_point(x0, eps, s_next), rtol=0, atol=1e-12)
    for s, s_next in zip(sigmas.flip(0)[:-1], sigmas.flip(0)[1:]):
        x = cf.euler_step(x, v, s, s_next)
    torch.testing.assert_close(x, eps, rtol=0, atol=1e-12)


def test_a_schedule_outside_zero_one_is_refused_by_name():
    cf.check_flow_sigmas(torch.tensor([1.0, 0.5, 0.0]), "Node")
    with pytest.raises(ValueError, match="Node: a flow model's SIGMAS lie in \\[0, 1\\]"):
        cf.check_flow_sigmas(torch.tensor([14.6, 1.0, 0.0]), "Node")


def test_flow_inversion_is_exact_for_a_velocity_independent_of_x_and_sampling_brings_it_back():
    """A denoiser whose velocity is a fixed field u(σ) (independent of x): inversion then Euler sampling along the
    same levels returns the latent (float64), and inversion lands where the straight line says."""
    from invedit.samplers import ddim
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 16, 4, 4, generator=g, dtype=F64)
    u = torch.randn(1, 16, 4, 4, generator=g, dtype=F64)

    def denoiser(x, sigma):
        return x - sigma * u  # v = u everywhere

    sigmas = torch.linspace(0.9, 0.0, 10, dtype=F64)
    noise = ddim.flow_invert(denoiser, x0, sigmas)
    torch.testing.assert_close(noise, x0 + 0.9 * u, rtol=0, atol=1e-12)
    torch.testing.assert_close(ddim.flow_sample(denoiser, noise, sigmas), x0, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        ddim.flow_invert(denoiser, x0, torch.tensor([14.6, 1.0, 0.0], dtype=F64))
