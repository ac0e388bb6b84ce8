"""RF-Solver and FireFlow (``samplers.flow_solvers``) as ComfyUI SAMPLERs on flow models: sampling as a KSAMPLER
function (noise scaling, latent noise masks and previews as the stock samplers), inversion as DDIM Invert's SAMPLER
with the solver swapped (the same hand-over to a stock sampler and the same refusals)."""
from __future__ import annotations

import torch

import comfy.samplers

from ..samplers import flow_solvers
from ..samplers.coords_flow import check_flow_sigmas
from .checks import is_flow, model_family
from .ddim import DDIMInversionSampler
from .progress import check_interrupt

NAMES = {"rf_solver": "RF-Solver", "fireflow": "FireFlow"}


def require_flow(model_sampling, family: str, who: str) -> None:
    if not is_flow(model_sampling):
        raise ValueError(f"{who}: solves the rectified-flow ODE, so it needs a flow-matching model (SD3, Flux, …); "
                         f"this is {family}. On SD1.x/SDXL use DDIM Invert, BDIA Invert or EDICT Invert.")


def sampler_function(solver: str):
    """A k-diffusion-style sampling function for ``comfy.samplers.KSAMPLER``."""
    who = f"{NAMES[solver]} sampler"

    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        inner = model.inner_model.inner_model if hasattr(model.inner_model, "inner_model") else model.inner_model
        require_flow(inner.model_sampling, model_family(inner), who)
        check_flow_sigmas(sigmas, who)
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])

        def denoiser(z, sigma):
            return model(z, sigma * s_in, **extra_args)

        def report(step):
            check_interrupt()
            if callback is not None:
                callback({"x": step.x, "i": step.i, "sigma": step.sigma, "sigma_hat": step.sigma,
                          "denoised": step.denoised})
        return flow_solvers.solve(solver, denoiser, x, sigmas, report)
    return sample


def flow_solver_sampler(solver: str) -> comfy.samplers.KSAMPLER:
    return comfy.samplers.KSAMPLER(sampler_function(solver))


class FlowSolverInversionSampler(DDIMInversionSampler):
    """Inversion with RF-Solver or FireFlow along the SIGMAS from the lowest level to the highest; the result hands
    over to a stock sampler with added noise off, as DDIM Invert's does."""

    def __init__(self, solver: str):
        if solver not in flow_solvers.SOLVERS:
            raise ValueError(f"unknown flow solver {solver!r}")
        self.solver = solver
        self.WHO = f"{NAMES[solver]} Sampler (InvEdit), direction invert"

    def invert(self, denoiser, latent, sigmas, callback, flow: bool) -> torch.Tensor:
        if not flow:
            raise ValueError(f"{self.WHO}: solves the rectified-flow ODE, so it needs a flow-matching model (SD3, "
                             f"Flux, …). On SD1.x/SDXL use DDIM Invert, BDIA Invert or EDICT Invert.")
        check_flow_sigmas(sigmas, self.WHO)
        levels = sigmas if sigmas[0] < sigmas[-1] else sigmas.flip(0)
        return flow_solvers.solve(self.solver, denoiser, latent, levels, callback)
