"""FlowEdit (``samplers.flowedit``) as a ComfyUI GUIDER: a ``CFGGuider`` holding the target prompt (positive /
negative, ``cfg``) and the source prompt (``src_positive`` / ``src_negative``, ``src_cfg``); its ``sample`` runs
FlowEdit's own ODE on the LATENT (the source image) in place of the SAMPLER it is given, through the stock
SamplerCustomAdvanced (model loading, patches, conditioning areas, previews, interrupt)."""
from __future__ import annotations

import logging

import torch

import comfy.samplers

from ..samplers import flowedit
from ..samplers.coords_flow import check_flow_sigmas, velocity_from_denoised
from .checks import is_flow, model_family
from .progress import reporter

log = logging.getLogger(__name__)
WHO = "FlowEdit Guider (InvEdit)"


class _FlowEditSampler(comfy.samplers.Sampler):
    def __init__(self, guider: "FlowEditGuider"):
        self.g = guider

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        g = self.g
        inner = model_wrap.inner_model
        if not is_flow(inner.model_sampling):
            raise ValueError(f"{WHO}: FlowEdit moves an image along the difference of two flow velocities, so it "
                             f"needs a flow-matching model (SD3, Flux, …); this is {model_family(inner)}.")
        check_flow_sigmas(sigmas, WHO)
        if latent_image is None or torch.count_nonzero(latent_image) == 0:
            raise ValueError(f"{WHO}: the LATENT is empty; FlowEdit edits an image: connect VAE Encode's output.")
        if denoise_mask is not None:
            raise ValueError(f"{WHO}: a latent noise mask is not supported; remove Set Latent Noise Mask.")
        flowedit.check_window(sigmas.numel() - 1, g.n_min, g.n_max, g.n_avg, WHO)
        opts, seed = extra_args.get("model_options", {}), extra_args.get("seed")
        s_in = latent_image.new_ones([latent_image.shape[0]])
        conds = model_wrap.conds

        def velocity(pos, neg, cfg):
            def v(x, s):
                d = comfy.samplers.sampling_function(inner, x, s * s_in, conds.get(neg), conds.get(pos), cfg,
                                                     model_options=opts, seed=seed)
                return velocity_from_denoised(x, d, s)
            return v

        gen = torch.Generator(device="cpu").manual_seed(int(g.seed))

        def draw():
            return torch.randn(latent_image.shape, generator=gen).to(latent_image)

        return flowedit.flowedit(velocity("src_positive", "src_negative", g.src_cfg),
                                 velocity("positive", "negative", g.cfg), latent_image, sigmas, g.n_min, g.n_max,
                                 g.n_avg, draw, reporter(callback))


class FlowEditGuider(comfy.samplers.CFGGuider):
    def __init__(self, model_patcher, src_positive, src_negative, positive, negative, src_cfg: float, cfg: float,
                 n_min: int, n_max: int, n_avg: int, seed: int):
        super().__init__(model_patcher)
        self.inner_set_conds({"positive": positive, "negative": negative, "src_positive": src_positive,
                              "src_negative": src_negative})
        self.set_cfg(cfg)
        self.src_cfg, self.n_min, self.n_max, self.n_avg, self.seed = src_cfg, n_min, n_max, n_avg, seed

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.info("%s: the NOISE input is not used (FlowEdit draws its own, from its seed).", WHO)
        return super().sample(torch.zeros_like(latent_image), latent_image, _FlowEditSampler(self), sigmas,
                              denoise_mask, callback, disable_pbar, seed)
