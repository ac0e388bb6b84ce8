"""DDIM inversion (``samplers.ddim``) as a ComfyUI SAMPLER."""
from __future__ import annotations

import logging

import torch

import comfy.samplers

from ..samplers import ddim
from .checks import model_family, require_vp_model
from .progress import reporter

log = logging.getLogger(__name__)


class DDIMInversionSampler(comfy.samplers.Sampler):
    """DDIM inversion (see ``samplers.ddim``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from the clean latent the guider passes in (ComfyUI has already applied ``process_latent_in``), walks the
    SIGMAS from the lowest level to the highest and returns the noise latent; the guider applies
    ``process_latent_out``, so the output is a LATENT in VAE space that the stock samplers, with added noise off and
    the same SIGMAS, denoise back. Added noise is ignored: inversion is deterministic.

    It is a bare ``Sampler``, not a ``KSAMPLER``: it controls noise scaling (it ignores added noise instead of letting
    ``KSAMPLER`` add σ·noise) and can refuse flow models (whose ``inverse_noise_scaling`` divides by 1−σ).
    """

    WHO = "DDIM inversion sampler"

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        ddim.check_schedule(sigmas, self.WHO)
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

        x = ddim.ddim_invert(denoiser, latent_image, sigmas, reporter(callback))
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.WHO}: the inversion produced NaN/inf values; check the model and SIGMAS "
                             f"(the lowest sigma must be >= 0, the model must not output NaN).")
        return x
