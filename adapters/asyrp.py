"""The Asyrp process (``samplers.asyrp``) as a ComfyUI SAMPLER, and the h-space patches it finds on a model."""
from __future__ import annotations

import torch

import comfy.k_diffusion.sampling as kds
import comfy.patcher_extension
import comfy.samplers

from ..hooks.hspace import HSpacePatch
from ..hooks.passes import CACHE, EDIT, ORIG
from ..hooks.run_state import RUN_KEY, RunState, install as install_run_state, run_state
from ..hooks.unet_split import SharedEncoder
from ..samplers import asyrp
from .checks import model_family, require_unet, require_vp_model
from .progress import NodeName, reporter
from .run import pass_options

SHARED_ENCODER_KEY = "invedit_hspace_shared_encoder"
PATCH_LISTS = ("middle_block_after_patch", "output_block_patch")  # where an h-space patch may sit, new hosts first


def set_hspace_patch(m, patch: HSpacePatch):
    """Put an h-space patch on a clone: ``set_model_middle_block_after_patch`` where the host has it (ComfyUI ≥ 0.20:
    it receives h_t itself), else ``output_block_patch`` (acting at ("output", 0)); plus the per-run state
    (``hooks.run_state``) its counts and warning live in."""
    if hasattr(m, "set_model_middle_block_after_patch"):
        m.set_model_middle_block_after_patch(patch)
    else:
        m.set_model_output_block_patch(patch)
    install_run_state(m.model_options)
    return m


def hspace_patches(model_options: dict) -> list:
    """The h-space patches (hooks.hspace.HSpacePatch) a model carries, in either place."""
    patches = model_options.get("transformer_options", {}).get("patches", {})
    return [p for where in PATCH_LISTS for p in patches.get(where, []) if isinstance(p, HSpacePatch)]


def shared_encoders(model_options: dict) -> list:
    """The SharedEncoder wrappers (hooks.unet_split) a model carries."""
    return [w for w in comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                                 model_options, is_model_options=True)
            if isinstance(w, SharedEncoder)]


def with_shared_encoder(m):
    """Add the SharedEncoder wrapper (hooks.unet_split) and the per-run state it caches in to a patched clone, once."""
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    if not comfy.patcher_extension.get_wrappers_with_key(kind, SHARED_ENCODER_KEY, m.model_options,
                                                         is_model_options=True):
        comfy.patcher_extension.add_wrapper_with_key(kind, SHARED_ENCODER_KEY, SharedEncoder(), m.model_options,
                                                     is_model_options=True)
    install_run_state(m.model_options)
    return m


class AsyrpSampler(comfy.samplers.Sampler):
    """The Asyrp process (``samplers.asyrp``) as a SAMPLER: inside any asymmetric h-space window two predictions per
    step (the model with the shift, P_edit, and without, P_orig), plain DDIM after it, DDIM η = 1 below t_boost
    (edit steps included when t_boost lies above the window's t_edit, as in the official code).
    Without an h-space patch it is deterministic DDIM (bit-identical to the stock ``euler``) until t_boost.

    With ``shared_encoder`` (default) and a model patched by h-space Apply, the unshifted pass keeps the U-Net's
    encoder state and the shifted pass runs only the decoder (hooks.unet_split); otherwise two full passes.
    ``last_run``: the ``hooks.run_state.RunState`` of the latest run (shifts added, encoder hits / misses)."""

    WHO = NodeName("Asyrp Sampler (InvEdit)")

    def __init__(self, t_boost: int = 0, eta_boost: float = 1.0, shared_encoder: bool = True):
        self.t_boost, self.eta_boost, self.shared_encoder = int(t_boost), float(eta_boost), bool(shared_encoder)
        self.last_run = None

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
        caches = bool(shared_encoders(base)) and self.shared_encoder
        # this run's state (made by the model's NewRunState wrapper; here when the model has none): every pass sees it
        run = run_state(base.get("transformer_options")) or RunState()
        self.last_run = run
        opts = pass_options(base)
        for o in opts.values():
            o["transformer_options"][RUN_KEY] = run
        args = {k: v for k, v in extra_args.items() if k != "model_options"}
        sigma_boost = float(ms.sigma(torch.tensor(self.t_boost))) if self.t_boost > 0 else 0.0

        def edit_at(sigma: float) -> bool:
            return any(p.mode == "asymmetric" and p.active(sigma) for p in patches)

        def denoise(xx, sigma, edit):
            if not edit:
                return model_wrap(xx, sigma * s_in, model_options=opts[ORIG], **args), None
            run.clear_cache()
            p_orig = model_wrap(xx, sigma * s_in, model_options=opts[CACHE if caches else ORIG], **args)
            return p_orig, model_wrap(xx, sigma * s_in, model_options=opts[EDIT], **args)

        noise_sampler = kds.default_noise_sampler(x, seed=extra_args.get("seed"))
        try:
            out = asyrp.asyrp_sample(denoise, x, sigmas, edit_at, sigma_boost, self.eta_boost, noise_sampler,
                                     reporter(callback))
        finally:
            run.clear_cache()  # the counts stay readable on ``last_run``; the encoder states go
        return ms.inverse_noise_scaling(sigmas[-1], out)
