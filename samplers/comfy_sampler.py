"""Thin adapters from the pure sampling math to ComfyUI's ``comfy.samplers.Sampler`` interface.

Imported only inside a ComfyUI host (``comfy`` is imported here at module level, unlike the math modules).
"""
from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.samplers

from . import ddim

log = logging.getLogger(__name__)

INVERSION_KEY = "invedit_inversion"  # metadata stored in the LATENT dict of an inverted latent


def model_family(base_model) -> str:
    """The model-config class name ComfyUI detected for a BaseModel (``SD15``, ``SDXL``, ``SD3``, ``Flux``, …)."""
    return type(base_model.model_config).__name__


def require_vp_model(model_sampling, family: str, who: str) -> None:
    """Refuse flow-matching models, whose coordinates (x = (1−σ)x0 + σε) the DDIM formulas do not cover."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        raise ValueError(f"{who}: this is a flow-matching model ({family} sampled with "
                         f"{type(model_sampling).__name__}, as SD3/Flux or a ModelSamplingSD3/Flux patch make it); "
                         f"DDIM inversion supports ε- and v-prediction models (SD1.x, SD2.x, SDXL) only for now. "
                         f"Use an SD1.5/SDXL checkpoint without a flow sampling patch.")


def require_latent_channels(latent: torch.Tensor, model_patcher, who: str) -> None:
    want = model_patcher.model.latent_format.latent_channels
    if latent.ndim != 4 or latent.shape[1] != want:
        raise ValueError(f"{who}: the LATENT has shape {tuple(latent.shape)} but {model_family(model_patcher.model)} "
                         f"works on [B, {want}, H, W] latents. Encode the image with this model's VAE.")


class DDIMInversionSampler(comfy.samplers.Sampler):
    """DDIM inversion (see ``samplers.ddim``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from the clean latent the guider passes in (ComfyUI has already applied ``process_latent_in``), walks the
    SIGMAS from the lowest level to the highest and returns the noise latent; the guider applies
    ``process_latent_out``, so the output is a LATENT in VAE space that the stock samplers, with added noise off and
    the same SIGMAS, denoise back. Added noise is ignored: inversion is deterministic.
    """

    WHO = "DDIM inversion sampler"

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        ddim.check_sigmas(sigmas, self.WHO)
        if latent_image is None:
            raise ValueError(f"{self.WHO}: no LATENT to invert.")
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.warning("%s: the NOISE input is ignored (inversion is deterministic); connect DisableNoise or set "
                        "add_noise off to silence this.", self.WHO)
        s_in = latent_image.new_ones([latent_image.shape[0]])
        total = sigmas.numel() - 1

        def denoiser(x, sigma):
            return model_wrap(x, sigma * s_in, **extra_args)

        def on_step(i, x, denoised, sigma, sigma_next):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(i, denoised, x, total)

        x = ddim.ddim_invert(denoiser, latent_image, sigmas, on_step)
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.WHO}: the inversion produced NaN/inf values; check the model and SIGMAS "
                             f"(the lowest sigma must be >= 0, the model must not output NaN).")
        return x


def inversion_metadata(model_patcher, sigmas: torch.Tensor, cfg: float, shape) -> dict:
    """What a later node needs to check that a regeneration matches the inversion settings."""
    return {"method": "ddim", "model_family": model_family(model_patcher.model),
            "sigmas": [float(s) for s in sigmas.flatten()], "cfg": float(cfg), "latent_shape": list(shape)}
