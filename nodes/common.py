"""Names and small helpers shared by every node of the pack."""
from __future__ import annotations

import os
from pathlib import Path

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview

from ..samplers.comfy_sampler import model_family, require_latent_channels, require_vp_model

PREFIX = "InvEdit"          # node ids: InvEdit<Name>; collision-safe across the ComfyUI ecosystem
CATEGORY = "InvEdit"
CLIP_FOLDER = "invedit_clip"  # models/invedit_clip/<name>/: transformers CLIP folders for the CLIP losses


def register_model_folder(name: str, extensions: set) -> None:
    """models/<name>/ as a ComfyUI model folder (extra_model_paths.yaml can add more paths)."""
    if name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name] = ([os.path.join(folder_paths.models_dir, name)], extensions)


register_model_folder(CLIP_FOLDER, set())


def clip_folder_names() -> list[str]:
    """The sub-folders of models/invedit_clip/ that hold a transformers CLIP (a config.json)."""
    names = set()
    for root in folder_paths.get_folder_paths(CLIP_FOLDER):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def clip_folder(name: str, who: str) -> Path:
    """The path of CLIP folder ``name`` (one of ``clip_folder_names()``; nothing else, so no path tricks)."""
    if name not in clip_folder_names():
        raise ValueError(f"{who}: no CLIP folder {name!r} in models/{CLIP_FOLDER}/; put a transformers CLIPModel "
                         f"folder (config.json, model.safetensors, tokenizer files) there and refresh")
    for root in folder_paths.get_folder_paths(CLIP_FOLDER):
        if os.path.isfile(os.path.join(root, name, "config.json")):
            return Path(root) / name
    raise AssertionError(name)


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
                        sigmas: torch.Tensor, on_step=None) -> torch.Tensor:
    """Run a Sampler through a stock CFGGuider with zero added noise, ComfyUI's preview callback and progress bar;
    ``on_step(i, denoised, x, total)`` also sees every step."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    preview = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, {})

    def callback(i, denoised, x, total):
        if on_step is not None:
            on_step(i, denoised, x, total)
        preview(i, denoised, x, total)

    return guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, callback=callback,
                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0)
