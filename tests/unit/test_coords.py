"""σ-space <-> VP conversions (samplers/coords.py)."""
import torch

from invedit.samplers import coords


def test_sigma_alpha_bar_round_trip():
    sigma = torch.logspace(-3, 2, 200, dtype=torch.float64)
    ab = coords.alpha_bar_from_sigma(sigma)
    assert ((ab > 0) & (ab < 1)).all()
    # 1 − ᾱ cancels catastrophically for σ = 1e-3 (ᾱ = 1 − 1e-6): float64 keeps ~1e-10 relative accuracy there
    torch.testing.assert_close(coords.sigma_from_alpha_bar(ab), sigma, rtol=1e-9, atol=0)


def test_alpha_bar_matches_the_ddpm_definition():
    # SD1.5's scaled-linear schedule: ᾱ_t = Π(1 − β); ComfyUI's σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)
    sigma = ((1 - ab) / ab).sqrt()
    torch.testing.assert_close(coords.alpha_bar_from_sigma(sigma), ab, rtol=1e-12, atol=0)
    assert abs(float(sigma[-1]) - 14.6146) < 1e-3  # ComfyUI's sigma_max for SD1.5


def test_x_vp_round_trip_and_scale():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    for s in (0.0, 0.03, 1.0, 14.6):
        sigma = torch.tensor(s, dtype=torch.float64)
        x = coords.vp_to_x(z, sigma)
        torch.testing.assert_close(coords.x_to_vp(x, sigma), z, rtol=1e-14, atol=1e-14)
        # x = z / sqrt(ᾱ)
        torch.testing.assert_close(x, z / coords.alpha_bar_from_sigma(sigma).sqrt(), rtol=1e-14, atol=1e-14)


def test_eps_from_denoised_recovers_the_noise():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    sigma = torch.tensor(2.5)
    torch.testing.assert_close(coords.eps_from_denoised(x0 + sigma * eps, x0, sigma), eps)
