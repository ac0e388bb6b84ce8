"""DDIM inversion (``samplers.ddim``) as a ComfyUI SAMPLER."""
from __future__ import annotations

import logging

import torch

import comfy.samplers

from ..samplers import ddim
from .checks import is_flow, model_family, require_vp_or_flow_model
from .progress import NodeName, reporter

log = logging.getLogger(__name__)


class DDIMInversionSampler(comfy.samplers.Sampler):
    """DDIM inversion (see ``samplers.ddim``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from the clean latent the guider passes in (ComfyUI has already applied ``process_latent_in``), walks the
    SIGMAS from the lowest level to the highest and returns the noise latent; the guider applies
    ``process_latent_out``, so the output is a LATENT in VAE space that the stock samplers, with added noise off and
    the same SIGMAS, denoise back. Added noise is ignored: inversion is deterministic.

    It is a bare ``Sampler``, not a ``KSAMPLER``: it controls noise scaling (it ignores added noise instead of letting
    ``KSAMPLER`` add σ·noise). Flow models (CONST: SD3, Flux) invert with the velocity (``samplers.ddim.flow_invert``);
    the stock samplers start a flow chain at (1 − σ_0)·latent when no noise is added (``noise_scaling``), so the
    inverted x is handed over divided by (1 − σ_top), and a schedule that reaches σ = 1 (pure noise, where that
    factor is 0) is refused: use denoise / strength below 1.
    """

    WHO = NodeName("DDIM Inversion Sampler (InvEdit)")

    def invert(self, denoiser, latent, sigmas, callback, flow: bool) -> torch.Tensor:
        """The walk itself (a subclass swaps the solver); the hand-over scaling is ``sample``'s."""
        if flow:
            return ddim.flow_invert(denoiser, latent, sigmas, callback)
        return ddim.ddim_invert(denoiser, latent, sigmas, callback)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        require_vp_or_flow_model(inner.model_sampling, model_family(inner), self.WHO)
        ddim.check_schedule(sigmas, self.WHO)
        flow = is_flow(inner.model_sampling)
        top = float(sigmas.max())
        if flow and top >= 1.0 - 1e-6:
            raise ValueError(f"{self.WHO}: this flow-matching schedule reaches σ = 1 (pure noise), from which the stock "
                             f"samplers cannot start without added noise (they scale the latent by 1 − σ = 0); use "
                             f"denoise below 1 in the scheduler (or drop the first sigma with SplitSigmas)")
        if latent_image is None:
            raise ValueError(f"{self.WHO}: no LATENT to invert.")
        if denoise_mask is not None:
            raise ValueError(f"{self.WHO}: the LATENT has a noise mask (Set Latent Noise Mask / inpainting), which "
                             f"inversion cannot honour (its regeneration would not match the image); remove the mask "
                             f"before inverting.")
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.warning("%s: the NOISE input is ignored (inversion is deterministic); connect DisableNoise or set "
                        "add_noise off to silence this.", self.WHO)
        s_in = latent_image.new_ones([latent_image.shape[0]])

        def denoiser(x, sigma):
            return model_wrap(x, sigma * s_in, **extra_args)

        x = self.invert(denoiser, latent_image, sigmas, reporter(callback), flow)
        if flow:
            x = x / (1.0 - top)
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.WHO}: the inversion produced NaN/inf values; check the model and SIGMAS "
                             f"(the lowest sigma must be >= 0, the model must not output NaN).")
        return x
