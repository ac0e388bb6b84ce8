"""The Asyrp process (``samplers.asyrp``) as a ComfyUI SAMPLER, and the h-space patches it finds on a model."""
from __future__ import annotations

import torch

import comfy.k_diffusion.sampling as kds
import comfy.patcher_extension
import comfy.samplers

from ..hooks.hspace import HSpacePatch
from ..hooks.passes import CACHE, EDIT, ORIG
from ..hooks.unet_split import SharedEncoder
from ..samplers import asyrp
from .checks import model_family, require_unet, require_vp_model
from .progress import reporter
from .run import pass_options

SHARED_ENCODER_KEY = "invedit_hspace_shared_encoder"


def hspace_patches(model_options: dict) -> list:
    """The h-space patches (hooks.hspace.HSpacePatch) a model carries."""
    patches = model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch", [])
    return [p for p in patches if isinstance(p, HSpacePatch)]


def shared_encoders(model_options: dict) -> list:
    """The SharedEncoder wrappers (hooks.unet_split) a model carries."""
    return [w for w in comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                                 model_options, is_model_options=True)
            if isinstance(w, SharedEncoder)]


def with_shared_encoder(m):
    """Add the SharedEncoder wrapper (hooks.unet_split) to a patched clone, once."""
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    if not comfy.patcher_extension.get_wrappers_with_key(kind, SHARED_ENCODER_KEY, m.model_options,
                                                         is_model_options=True):
        comfy.patcher_extension.add_wrapper_with_key(kind, SHARED_ENCODER_KEY, SharedEncoder(), m.model_options,
                                                     is_model_options=True)
    return m


class AsyrpSampler(comfy.samplers.Sampler):
    """The Asyrp process (``samplers.asyrp``) as a SAMPLER: inside any asymmetric h-space window two predictions per
    step (the model with the shift, P_edit, and without, P_orig), plain DDIM after it, DDIM η = 1 below t_boost
    (edit steps included when t_boost lies above the window's t_edit, as in the official code).
    Without an h-space patch it is deterministic DDIM (bit-identical to the stock ``euler``) until t_boost.

    With ``shared_encoder`` (default) and a model patched by h-space Apply, the unshifted pass keeps the U-Net's
    encoder state and the shifted pass runs only the decoder (hooks.unet_split); otherwise two full passes."""

    WHO = "Asyrp sampler"

    def __init__(self, t_boost: int = 0, eta_boost: float = 1.0, shared_encoder: bool = True):
        self.t_boost, self.eta_boost, self.shared_encoder = int(t_boost), float(eta_boost), bool(shared_encoder)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        ms = inner.model_sampling
        require_unet(inner, self.WHO)
        require_vp_model(ms, model_family(inner), self.WHO)
        if denoise_mask is not None:
            raise ValueError(f"{self.WHO}: latent noise masks (inpainting) are not supported; remove the mask or use "
                             f"the symmetric mode with a stock sampler.")
        x = ms.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        s_in = x.new_ones([x.shape[0]])
        base = extra_args["model_options"]
        patches = hspace_patches(base)
        caches = shared_encoders(base) if self.shared_encoder else []
        opts = pass_options(base)
        args = {k: v for k, v in extra_args.items() if k != "model_options"}
        sigma_boost = float(ms.sigma(torch.tensor(self.t_boost))) if self.t_boost > 0 else 0.0

        def edit_at(sigma: float) -> bool:
            return any(p.mode == "asymmetric" and p.active(sigma) for p in patches)

        def denoise(xx, sigma, edit):
            if not edit:
                return model_wrap(xx, sigma * s_in, model_options=opts[ORIG], **args), None
            for c in caches:
                c.clear()
            p_orig = model_wrap(xx, sigma * s_in, model_options=opts[CACHE if caches else ORIG], **args)
            return p_orig, model_wrap(xx, sigma * s_in, model_options=opts[EDIT], **args)

        noise_sampler = kds.default_noise_sampler(x, seed=extra_args.get("seed"))
        try:
            out = asyrp.asyrp_sample(denoise, x, sigmas, edit_at, sigma_boost, self.eta_boost, noise_sampler,
                                     reporter(callback))
        finally:
            for c in caches:
                c.clear()
        return ms.inverse_noise_scaling(sigmas[-1], out)
