"""Tiny SD1.5-detectable model files with random weights from a fixed seed, for tests and the demo.

Built with ComfyUI's own classes so the stock loaders accept them unchanged:
- UNet: model_channels 320 and context_dim 768 (what SD1.5 detection fixes), one level, one res block, one
  transformer block and a middle block (h-space lives at its output). ~22 M parameters.
- Text encoder: the full CLIP-L text tower shape (comfy/sd1_clip_config.json, every key written; ComfyUI leaves
  missing keys uninitialised), HF key layout for CLIPLoader.
- VAE: TAESD layout (`taesd_decoder.1.weight` makes the stock loader build TAESD), with SD1.5's latent scale.

Files written under --models:
  checkpoints/tiny_sd15.safetensors                       (CheckpointLoaderSimple)
  unet/tiny_sd15_unet.safetensors                         (UNETLoader)
  text_encoders/tiny_clip_l.safetensors                   (CLIPLoader, type stable_diffusion)
  vae/tiny_taesd.safetensors                              (VAELoader)
and, so that example workflows that name a user's SD1.5 files run unchanged, links with those names (ALIASES).

Run with the venv's python: python harness/tiny_models.py --comfy .host/ComfyUI --models .host/base/models
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

SEED = 20261121
OUT_GAIN = 0.1

TINY_UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
    "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
}

FILES = {
    "checkpoints": "tiny_sd15.safetensors",
    "unet": "tiny_sd15_unet.safetensors",
    "text_encoders": "tiny_clip_l.safetensors",
    "vae": "tiny_taesd.safetensors",
}

# The file names the shipped example workflows use (what an SD1.5 user has) -> our embedded files.
ALIASES = {
    "checkpoints/v1-5-pruned-emaonly-fp16.safetensors": "tiny_sd15.safetensors",
}


def init_state_dict(module, seed: int) -> dict:
    """Fill every parameter and buffer deterministically: fan-in-scaled normal weights, unit norms, zero biases."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in sorted(module.state_dict().items()):
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("position_ids"):
            v = torch.arange(t.shape[-1]).expand(t.shape).clone()
        elif leaf == "bias":
            v = torch.zeros(t.shape)
        elif t.ndim >= 2:
            fan_in = math.prod(t.shape[1:])
            v = torch.randn(t.shape, generator=g) / math.sqrt(fan_in)
        elif t.ndim == 1 and leaf == "weight":  # GroupNorm / LayerNorm scale
            v = torch.ones(t.shape)
        else:
            v = torch.zeros(t.shape)
        out[name] = v.to(t.dtype if t.is_floating_point() else t.dtype)
    return out


def build(comfy_root: Path):
    sys.path.insert(0, str(comfy_root))
    from comfy.cli_args import args
    args.cpu = True
    import json
    import torch
    import comfy.ops
    import comfy.supported_models
    import comfy.clip_model
    import comfy.taesd.taesd

    cfg = dict(TINY_UNET_CONFIG, dtype=torch.float32)
    model = comfy.supported_models.SD15(cfg).get_model({})
    unet_sd = init_state_dict(model.diffusion_model, SEED)
    # Damp the output layer: ε̂ then has std ~0.15 and varies smoothly with x, as a trained model's prediction does
    # along a DDIM trajectory; an undamped random net makes DDIM inversion diverge for reasons no real model has.
    unet_sd["out.2.weight"] *= OUT_GAIN
    model.diffusion_model.load_state_dict(unet_sd)

    with open(comfy_root / "comfy" / "sd1_clip_config.json") as f:
        clip_cfg = json.load(f)
    clip = comfy.clip_model.CLIPTextModel(clip_cfg, torch.float32, "cpu", comfy.ops.manual_cast)
    clip_sd = init_state_dict(clip, SEED + 1)
    clip_sd.pop("text_projection.weight")  # SD1.5 text encoders have none

    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    vae_sd = init_state_dict(taesd, SEED + 2)
    vae_sd["vae_scale"] = torch.tensor(0.18215)  # raw VAE space, as SD1.5's latent_format expects
    vae_sd["vae_shift"] = torch.tensor(0.0)
    return model, unet_sd, clip_sd, vae_sd


def write(comfy_root: Path, models: Path) -> None:
    model, unet_sd, clip_sd, vae_sd = build(comfy_root)
    import torch
    import comfy.utils

    def save(sd, sub):
        path = models / sub / FILES[sub]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        comfy.utils.save_torch_file({k: v.contiguous().to(torch.float16) if v.is_floating_point() else v.contiguous()
                                     for k, v in sd.items()}, str(tmp), metadata={"tiny_model_seed": str(SEED)})
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")

    save(unet_sd, "unet")
    save(clip_sd, "text_encoders")
    save(vae_sd, "vae")
    ckpt = model.state_dict_for_saving({"clip_l.transformer." + k: v for k, v in clip_sd.items()},
                                       {k: v for k, v in vae_sd.items()})
    save(ckpt, "checkpoints")
    for alias, target in ALIASES.items():
        link = models / alias
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True, type=Path)
    ap.add_argument("--models", required=True, type=Path)
    a = ap.parse_args()
    write(a.comfy.resolve(), a.models.resolve())


if __name__ == "__main__":
    main()
