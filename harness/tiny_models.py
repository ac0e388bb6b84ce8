"""Assemble the shapes-world model files that the stock ComfyUI loaders read (run by harness/setup_host.py).

Inputs:
- the trained UNet, VAE, classifiers and toy CLIP, committed as fp16 safetensors in harness/shapes/weights/
  (harness/shapes/train.py reproduces them);
- the text encoder, a CLIP-L-shaped tower (comfy/sd1_clip_config.json, every key written) whose weights are
  generated here from a fixed seed with integer-exact arithmetic, never downloaded nor committed; its sha256 is
  checked against TEXT_ENCODER_SHA256, the encoder the UNet was trained with.

Files written under --models:
  checkpoints/shapes_sd15.safetensors      (CheckpointLoaderSimple: UNet + text encoder + VAE)
  unet/shapes_sd15_unet.safetensors        (UNETLoader)
  text_encoders/shapes_clip_l.safetensors  (CLIPLoader, type stable_diffusion; HF key layout)
  vae/shapes_taesd.safetensors             (VAELoader; TAESD layout)
  invedit_classifiers/shapes_{colour,shape}.safetensors
  invedit_clip/shapes-toy-clip/            (transformers CLIPModel local folder: config, weights, tokenizer)
  diffusion_models/invedit_random_{hunyuanimage21,zimage}.safetensors, vae/invedit_random_taesd64.safetensors
                                           (the family templates' random-weight models; Z-Image with --templates)
and links with the file names the example workflows use (ALIASES).

Run with the venv's python: python harness/tiny_models.py --comfy .host/ComfyUI --models .host/base/models
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "shapes" / "weights"

TEXT_ENCODER_SEED = 20261121
TEXT_ENCODER_SHA256 = "9858c8346b230eb41e054629733b4d955cd7b661d408a9ac93e4c60f911b5780"

# SD1.5 detection fixes model_channels 320 and context_dim 768; the rest is read from the weights: one level,
# one res block, one transformer block, and a middle block (h-space lives at its output).
TINY_UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
    "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
}

# SD3 detection (comfy/model_detection.py) ties hidden size (64·depth), heads (depth) and blocks (depth) to depth;
# the world is trained "narrow" on CLIP-L alone (context 768, pooled 768) and widened with zero columns to SD3's
# 4096 / 2048 when the files are assembled (the same outputs: ComfyUI pads CLIP-L's conditioning with zeros).
DIT_DEPTH, DIT_POS = 4, 16


def sd3_dit_config(depth: int = DIT_DEPTH, pos: int = DIT_POS, narrow: bool = False) -> dict:
    """What ComfyUI's SD3 detection reads back from the world's MMDiT weights (narrow: as trained)."""
    h = 64 * depth
    return {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": depth, "input_size": None,
            "adm_in_channels": 768 if narrow else 2048,
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 768 if narrow else 4096, "out_features": h}},
            "num_patches": pos ** 2, "pos_embed_max_size": pos, "pos_embed_scaling_factor": None,
            "x_block_self_attn_layers": []}


def widen_dit(sd: dict) -> dict:
    """The narrow-trained MMDiT's weights with SD3's input widths: zero columns for CLIP-G / T5 (4096 context,
    2048 pooled), which ComfyUI fills with zeros for a CLIP-L-only text encoder."""
    import torch
    out = dict(sd)
    w, y = sd["context_embedder.weight"], sd["y_embedder.mlp.0.weight"]
    out["context_embedder.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 4096 - w.shape[1])], 1)
    out["y_embedder.mlp.0.weight"] = torch.cat([y, y.new_zeros(y.shape[0], 2048 - y.shape[1])], 1)
    return out


def vae16_state_dict(vae_sd: dict, channels: int = 16, scale: float = 1.5305, shift: float = 0.0609) -> dict:
    """The shapes TAESD as a 16-channel (SD3 / Flux) TAESD without training: the encoder's last conv gets 12 zero
    output channels, the decoder's first conv 12 zero input channels (it ignores them), and vae_scale / vae_shift
    make ComfyUI's SD3 latent format (scale 1.5305, shift 0.0609) hand the DiT encoder / std (unit variance).
    ``channels`` / ``scale`` / ``shift``: the same for another latent format (the HunyuanImage 2.1 template's 64)."""
    import torch
    std = float(vae_sd["vae_scale"].float()) / 0.18215  # the 4-channel file stores 0.18215·std
    out = {k: v.clone() for k, v in vae_sd.items()}
    w, b = vae_sd["taesd_encoder.14.weight"], vae_sd["taesd_encoder.14.bias"]
    pad = channels - w.shape[0]
    out["taesd_encoder.14.weight"] = torch.cat([w, w.new_zeros(pad, *w.shape[1:])])
    out["taesd_encoder.14.bias"] = torch.cat([b, b.new_zeros(pad)])
    d = vae_sd["taesd_decoder.1.weight"]
    out["taesd_decoder.1.weight"] = torch.cat([d, d.new_zeros(d.shape[0], pad, *d.shape[2:])], 1)
    out["vae_scale"] = torch.tensor(scale * std)
    out["vae_shift"] = torch.tensor(shift)
    return out


FILES = {
    "checkpoints": "shapes_sd15.safetensors",
    "unet": "shapes_sd15_unet.safetensors",
    "text_encoders": "shapes_clip_l.safetensors",
    "vae": "shapes_taesd.safetensors",
}
# The flow edition (issue 15): an SD3 checkpoint, and split files for UNETLoader + CLIPLoader(sd3) + VAELoader.
SD3_FILES = {
    "checkpoints": "shapes_sd3.safetensors",
    "diffusion_models": "shapes_sd3_dit.safetensors",
    "vae": "shapes_taesd16.safetensors",
}
# The scenes world (issue 27, harness/scenes/): a multi-level SD1.5 U-Net trained narrow and widened here
# (harness/scenes/models.py), an SD3 MMDiT, their TAESDs; the same generated CLIP-L.
SCENES_WEIGHTS = WEIGHTS.parent.parent / "scenes" / "weights"
SCENES_FILES = {
    "checkpoints": "scenes_sd15.safetensors",
    "unet": "scenes_sd15_unet.safetensors",
    "vae": "scenes_taesd.safetensors",
}
SCENES_SD3_FILES = {
    "checkpoints": "scenes_sd3.safetensors",
    "diffusion_models": "scenes_sd3_dit.safetensors",
    "vae": "scenes_taesd16.safetensors",
}
SCENES_TOY_CLIP_DIR = "invedit_clip/scenes-toy-clip"
SCENES_CLASSIFIERS = ("scenes_texture.safetensors", "scenes_style.safetensors")  # small_cnn, 128 px
CLASSIFIERS = ("shapes_colour.safetensors", "shapes_shape.safetensors")
CLASSIFIER_DIR = "invedit_classifiers"  # the pack's classifier folder (nodes/folders.py); was "classifiers"
TOY_CLIP_DIR = "invedit_clip/shapes-toy-clip"

# Random-weight models for the example templates of families too large to have here (issue 26, item 4): the
# family's diffusion model shrunk as far as ComfyUI's detection allows (harness/families.py), with text width 768 so
# that the shapes CLIP-L stands in for its text encoder (ComfyUI's CLIPLoader builds a CLIP-L file as a CLIP-L for
# these loader types), and the shapes TAESD widened to the family's latent channels. The heavy ones (Z-Image's
# detection pins 902 M parameters, a 1.8 GB file) only with --templates (make demo, make test-slow).
TEMPLATE_MODELS = {  # file -> (family, dtype, heavy)
    "invedit_random_hunyuanimage21.safetensors": ("HunyuanImage 2.1", "bfloat16", False),
    "invedit_random_zimage.safetensors": ("Z-Image", "bfloat16", True),
}
TEMPLATE_VAE64 = "invedit_random_taesd64.safetensors"

# The file names the shipped example workflows use (what the family's user has) -> our embedded files.
ALIASES = {
    "checkpoints/v1-5-pruned-emaonly-fp16.safetensors": FILES["checkpoints"],
    "checkpoints/sd3.5_medium.safetensors": SD3_FILES["checkpoints"],
    # the examples that rank methods (issue 27): the scenes world under two other names users have for the families
    "checkpoints/v1-5-pruned-emaonly.safetensors": SCENES_FILES["checkpoints"],
    "checkpoints/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": SCENES_SD3_FILES["checkpoints"],
    # the templates: the names of ComfyUI's own workflow templates for these families
    "diffusion_models/hunyuanimage2.1_bf16.safetensors": "invedit_random_hunyuanimage21.safetensors",
    "text_encoders/qwen_2.5_vl_7b.safetensors": FILES["text_encoders"],
    "vae/hunyuan_image_2.1_vae_fp16.safetensors": TEMPLATE_VAE64,
    "diffusion_models/z_image_turbo_bf16.safetensors": "invedit_random_zimage.safetensors",
    "text_encoders/qwen_3_4b.safetensors": FILES["text_encoders"],
    "vae/ae.safetensors": SD3_FILES["vae"],
}


class ChecksumError(RuntimeError):
    pass


def _comfy(comfy_root: Path) -> None:
    if str(comfy_root) not in sys.path:
        sys.path.insert(0, str(comfy_root))
    from comfy.cli_args import args
    args.cpu = True


def text_encoder_state_dict(comfy_root: Path) -> dict:
    """The CLIP-L-shaped text encoder, HF key layout, fp16; bit-identical on every machine: uniform weights
    U(±sqrt(3/fan_in)) from torch.randint (integer Mersenne Twister) scaled by one float32 multiply, unit norms,
    zero biases."""
    _comfy(comfy_root)
    import torch
    import comfy.clip_model
    import comfy.ops

    with open(comfy_root / "comfy" / "sd1_clip_config.json") as f:
        cfg = json.load(f)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in
                  comfy.clip_model.CLIPTextModel(cfg, torch.float32, "meta", comfy.ops.manual_cast).state_dict().items()}
    g = torch.Generator().manual_seed(TEXT_ENCODER_SEED)
    sd = {}
    for name, (shape, dtype) in sorted(shapes.items()):
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("position_ids"):
            v = torch.arange(shape[-1]).expand(shape).clone()
        elif leaf == "bias":
            v = torch.zeros(shape, dtype=torch.float16)
        elif len(shape) >= 2:
            scale = torch.tensor(math.sqrt(3.0 / math.prod(shape[1:])) / 2 ** 23, dtype=torch.float32)
            v = (torch.randint(-2 ** 23, 2 ** 23, shape, generator=g, dtype=torch.int32).float() * scale).half()
        elif leaf == "weight":
            v = torch.ones(shape, dtype=torch.float16)
        else:
            v = torch.zeros(shape, dtype=torch.float16)
        sd[name] = v
    return sd


def checksum(sd: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def verified_text_encoder(comfy_root: Path) -> dict:
    sd = text_encoder_state_dict(comfy_root)
    got = checksum(sd)
    if got != TEXT_ENCODER_SHA256:
        raise ChecksumError(
            f"the generated shapes-world text encoder has sha256 {got}, expected {TEXT_ENCODER_SHA256}: it is not "
            f"the encoder the committed UNet was trained with, so prompts would not steer it. This happens with a "
            f"torch other than 2.13.0 (torch.randint's stream) or an edited harness/tiny_models.py; run "
            f"`make clean && make test`, or retrain with `python -m harness.shapes.train all`.")
    return sd


def load_weights(name: str) -> dict:
    from safetensors.torch import load_file
    path = WEIGHTS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the trained shapes-world weights are committed in the "
                                f"repository; restore them or retrain with `python -m harness.shapes.train all`.")
    return load_file(str(path))


def for_saving(model, clip_sd: dict, vae_sd: dict) -> dict:
    """``BaseModel.state_dict_for_saving`` on either host: 0.3.75 reads the U-Net from the model itself; newer hosts
    (0.33) take it as a first positional argument (given the CLIP dict there, they write a checkpoint without a U-Net).
    The dicts are copied: the model config renames the CLIP keys in place (SD1.5's to cond_stage_model.*), which
    would hand the next checkpoint written from the same dict (the scenes world's SD3 after its SD1.5) a text
    encoder under the wrong prefix, i.e. none."""
    import inspect
    clip_sd, vae_sd = dict(clip_sd), dict(vae_sd)
    if "unet_state_dict" in inspect.signature(model.state_dict_for_saving).parameters:
        return model.state_dict_for_saving(model.diffusion_model.state_dict(), clip_state_dict=clip_sd,
                                           vae_state_dict=vae_sd)
    return model.state_dict_for_saving(clip_state_dict=clip_sd, vae_state_dict=vae_sd)


def write_templates(comfy_root: Path, models: Path, vae_sd: dict, heavy: bool = False) -> None:
    """The random-weight template models (TEMPLATE_MODELS; the heavy ones with ``heavy``), each written to a
    temporary name first."""
    _comfy(comfy_root)
    import torch
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from harness import families
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    for name, (family, dtype, big) in TEMPLATE_MODELS.items():
        path = models / "diffusion_models" / name
        if big and not heavy:
            continue
        tmp = path.with_suffix(".tmp")
        cls, n = families.write(family, tmp, dtype=getattr(torch, dtype), context=768,
                                metadata={"invedit": f"random-weight {family} (example templates)"})
        os.replace(tmp, path)
        print(f"wrote {path.name}: random-weight {family} ({cls}, {n / 1e6:.1f} M parameters, text width 768)")
    import comfy.latent_formats as lf
    fmt = lf.HunyuanImage21()
    vae64 = vae16_state_dict(vae_sd, 64, fmt.scale_factor, 0.0)
    import comfy.utils
    tmp = models / "vae" / (TEMPLATE_VAE64 + ".tmp")
    comfy.utils.save_torch_file(vae64, str(tmp), metadata={"invedit": "shapes TAESD widened to 64 channels"})
    os.replace(tmp, models / "vae" / TEMPLATE_VAE64)


def save_model_file(path: Path, sd: dict, world: str) -> None:
    """ComfyUI's safetensors writer, through a temporary file (an interrupted set-up leaves no half file)."""
    import comfy.utils
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"invedit": world})
    os.replace(tmp, path)


def finished(path: Path) -> bool:
    """Whether a scenes-world weights file is a finished training's: a stage committed mid-run (to go on in a later
    session, harness/scenes/train.py) has ``steps_done`` < ``steps`` in its metadata; the VAE is finished once its
    vae_scale is calibrated."""
    path = Path(path)
    if path.is_dir():
        return path.exists()
    if not path.exists():
        return False
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("stage") == "vae" and "vae_scale" not in f.keys():
            return False
    return meta.get("steps_done", meta.get("steps")) == meta.get("steps")


def install_classifier(weights: Path, name: str, models: Path) -> bool:
    """Copy a trained classifier into the pack's classifier folder; False if it is not trained (yet)."""
    if not finished(weights / name):
        return False
    (models / CLASSIFIER_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights / name, models / CLASSIFIER_DIR / name)
    return True


def install_toy_clip(folder: Path, dest: Path) -> bool:
    """Copy a toy CLIP's local folder (config, weights, tokenizer, processor); False if it is not trained (yet)."""
    if not folder.exists():
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        shutil.copyfile(f, dest / f.name)
    return True


def write_scenes(comfy_root: Path, models: Path, clip_sd: dict) -> list[str]:
    """The scenes world's files (SCENES_FILES, SCENES_SD3_FILES, the toy CLIP), for each part whose trained weights
    are in harness/scenes/weights/; returns the parts written."""
    _comfy(comfy_root)
    import torch
    import comfy.supported_models
    from safetensors.torch import load_file
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from harness.scenes import models as scenes_models
    w = SCENES_WEIGHTS
    done = []
    done += [name for name in SCENES_CLASSIFIERS if install_classifier(w, name, models)]
    if install_toy_clip(w / "toy_clip", models / SCENES_TOY_CLIP_DIR):
        done.append("toy clip")
    if not finished(w / "vae.safetensors"):
        return done

    def save(sd, sub, name):
        save_model_file(models / sub / name, sd, "scenes-world")

    vae_sd = load_file(str(w / "vae.safetensors"))
    save(vae_sd, "vae", SCENES_FILES["vae"])
    done.append("vae")
    clip_keys = {"clip_l.transformer." + k: v for k, v in clip_sd.items()}
    if finished(w / "unet.safetensors"):
        unet_sd = scenes_models.widen_unet(load_file(str(w / "unet.safetensors")), scenes_models.wide_unet_shapes())
        model = comfy.supported_models.SD15(dict(scenes_models.UNET_CONFIG, dtype=torch.float16)).get_model({})
        model.diffusion_model.load_state_dict(unet_sd)  # strict: the widened U-Net must fit the SD1.5 layout
        save(unet_sd, "unet", SCENES_FILES["unet"])
        save(for_saving(model, clip_keys, dict(vae_sd)), "checkpoints", SCENES_FILES["checkpoints"])
        done.append("unet")
    if finished(w / "dit.safetensors"):
        dit_sd = widen_dit(scenes_models.widen_dit(load_file(str(w / "dit.safetensors"))))
        sd3 = comfy.supported_models.SD3(dict(sd3_dit_config(scenes_models.DIT_DEPTH),
                                              dtype=torch.float16)).get_model({})
        sd3.diffusion_model.load_state_dict(dit_sd)
        vae16 = vae16_state_dict(vae_sd)
        save(dit_sd, "diffusion_models", SCENES_SD3_FILES["diffusion_models"])
        save(vae16, "vae", SCENES_SD3_FILES["vae"])
        save(for_saving(sd3, clip_keys, dict(vae16)), "checkpoints", SCENES_SD3_FILES["checkpoints"])
        done.append("dit")
    return done


def write(comfy_root: Path, models: Path, any_torch: bool = False, templates: bool = False) -> None:
    _comfy(comfy_root)
    import torch
    import comfy.supported_models

    try:
        clip_sd = verified_text_encoder(comfy_root)
    except ChecksumError as e:
        if not any_torch:
            raise
        print(f"WARNING (--any-torch, torch {torch.__version__}): {e}")
        clip_sd = text_encoder_state_dict(comfy_root)
    unet_sd = load_weights("unet.safetensors")
    vae_sd = load_weights("vae.safetensors")
    model = comfy.supported_models.SD15(dict(TINY_UNET_CONFIG, dtype=torch.float16)).get_model({})
    model.diffusion_model.load_state_dict(unet_sd)  # strict: the committed UNet must fit the SD1.5 layout

    def save(sd, sub, name=None):
        save_model_file(models / sub / (name or FILES[sub]), sd, "shapes-world")

    save(unet_sd, "unet")
    save(clip_sd, "text_encoders")
    save(vae_sd, "vae")
    save(for_saving(model, {"clip_l.transformer." + k: v for k, v in clip_sd.items()}, dict(vae_sd)), "checkpoints")
    if (WEIGHTS / "dit.safetensors").exists():
        dit_sd = widen_dit(load_weights("dit.safetensors"))
        sd3 = comfy.supported_models.SD3(dict(sd3_dit_config(), dtype=torch.float16)).get_model({})
        sd3.diffusion_model.load_state_dict(dit_sd)  # strict: the committed MMDiT must fit the SD3 layout
        vae16 = vae16_state_dict(vae_sd)
        save(dit_sd, "diffusion_models", SD3_FILES["diffusion_models"])
        save(vae16, "vae", SD3_FILES["vae"])
        save(for_saving(sd3, {"clip_l.transformer." + k: v for k, v in clip_sd.items()}, dict(vae16)),
             "checkpoints", SD3_FILES["checkpoints"])
    for name in CLASSIFIERS:
        if install_classifier(WEIGHTS, name, models):
            (models / "classifiers" / name).unlink(missing_ok=True)  # the copy earlier versions put in the old folder
    install_toy_clip(WEIGHTS / "toy_clip", models / TOY_CLIP_DIR)
    write_scenes(comfy_root, models, clip_sd)
    write_templates(comfy_root, models, vae_sd, heavy=templates)
    for alias, target in ALIASES.items():
        if not (models / Path(alias).parent / target).exists():
            continue
        link = models / alias
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    print(f"assembled the shapes-world model files in {models}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True, type=Path)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--print-checksum", action="store_true", help="print the text encoder's sha256 and exit")
    ap.add_argument("--any-torch", action="store_true", help=(
        "another torch than 2.13.0 (a CUDA machine's, make gpu-check): its text encoder differs, so prompts do not "
        "steer the shapes world; warn instead of refusing (the GPU check tests gradients and leaks, not edits)"))
    ap.add_argument("--templates", action="store_true",
                    help="also the heavy random-weight models of the example templates (TEMPLATE_MODELS; 1.8 GB)")
    a = ap.parse_args()
    if a.print_checksum:
        print(checksum(text_encoder_state_dict(a.comfy.resolve())))
        return
    write(a.comfy.resolve(), a.models.resolve(), any_torch=a.any_torch, templates=a.templates)


if __name__ == "__main__":
    main()
