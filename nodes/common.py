"""Names and small helpers shared by every node of the pack."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..samplers.comfy_sampler import model_family, require_latent_channels, require_vp_model

PREFIX = "InvEdit"          # node ids: InvEdit<Name>; collision-safe across the ComfyUI ecosystem
CATEGORY = "InvEdit"


def node_id(name: str) -> str:
    return PREFIX + name


def display(name: str) -> str:
    return f"{name} (InvEdit)"


def checked_latent(model, latent: dict, who: str) -> torch.Tensor:
    """The LATENT's samples for a VP (ε/v) model with the right channel count; refuses flow models."""
    require_vp_model(model.get_model_object("model_sampling"), model_family(model.model), who)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    require_latent_channels(samples, model, who)
    return samples


def run_with_cfg_guider(model, positive, negative, cfg: float, sampler, samples: torch.Tensor,
                        sigmas: torch.Tensor) -> torch.Tensor:
    """Run a Sampler through a stock CFGGuider with zero added noise, ComfyUI's preview callback and progress bar."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, {})
    return guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, callback=callback,
                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0)
