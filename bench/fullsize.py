"""Full-size models with random weights, built from ComfyUI 0.3.75's own configs (issue 17): what a real checkpoint
costs in time and memory, without its weights. Each builder returns the stock ComfyUI object a loader would (a
ModelPatcher, a ``comfy.sd.VAE``, a ``comfy.sd.CLIP``, a ``ClipVisionModel``); ComfyUI's layers start uninitialised,
so every parameter is set here: matrices ~ N(0, 1/fan_in)·0.5 (activations stay finite through the depth), norms'
weights 1, biases 0. No semantics, exactly the real cost. They are built under inference mode, as a loader node
builds them inside a prompt (so the pack's gradient methods meet the tensors they meet in ComfyUI).

    MODELS[name] -> Spec: the config (comfy/model_detection.py), its supported_models class, the context and pooled
    widths the conditioning needs, and the latent channels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# comfy/model_detection.py:901 (SD15) and :871 (SDXL), the configs detection gives a real SD1.5 / SDXL checkpoint
SD15 = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
        "use_temporal_resblock": False}
SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
        "use_temporal_resblock": False}
# What comfy/model_detection.py:54 reads back from SD3-medium's MMDiT (depth 24: hidden 1536, 24 heads; 192² patch
# positions; no extra self-attention blocks, no qk-norm)
SD3_MEDIUM = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
              "adm_in_channels": 2048,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 1536}},
              "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
              "x_block_self_attn_layers": []}
# comfy/sd.py:380, the default SD1.x / SDXL VAE (AutoencoderKL, 84 M); z_channels 16 is SD3's
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


@dataclass(frozen=True)
class Spec:
    title: str
    config: dict
    family: str          # the comfy.supported_models class
    context: int         # cross-attention width of the conditioning
    tokens: int          # its length (77 CLIP, 154 = 77 CLIP + 77 T5 for SD3)
    pooled: int          # pooled_output width (0: none)
    latent_channels: int
    unet: bool


MODELS = {
    "sd15": Spec("SD1.5 U-Net", SD15, "SD15", 768, 77, 0, 4, True),
    "sdxl": Spec("SDXL U-Net", SDXL, "SDXL", 2048, 77, 1280, 4, True),
    "sd3": Spec("SD3-medium-shaped MMDiT", SD3_MEDIUM, "SD3", 4096, 154, 2048, 16, False),
}


def randomise(module: torch.nn.Module, seed: int = 0) -> int:
    """Set every parameter of ``module`` (matrices ~ N(0, 1/fan_in)·0.5, 1-D weights 1, biases 0); the count."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                v = torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5)
            else:
                v = torch.ones(p.shape) if name.endswith(("weight", "scale")) else torch.zeros(p.shape)
            p.copy_(v)
            n += p.numel()
    return n


def diffusion_model(name: str, device, dtype=torch.float32, seed: int = 0):
    """The full-size model ``name`` (MODELS) as a ModelPatcher loading to ``device``; its parameter count."""
    import comfy.model_patcher
    import comfy.supported_models
    spec = MODELS[name]
    config = getattr(comfy.supported_models, spec.family)(dict(spec.config, dtype=dtype))
    config.set_inference_dtype(dtype, None)
    with torch.inference_mode():
        model = config.get_model({})
        n = randomise(model.diffusion_model, seed)
        model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu")), n


def vae(latent_channels: int = 4, seed: int = 1):
    """A full-size AutoencoderKL (comfy/sd.py's default: 128 channels, ×8) as the stock ``comfy.sd.VAE`` builds it
    from a checkpoint's weights; 16 latent channels for SD3."""
    import comfy.ldm.models.autoencoder
    import comfy.sd
    cfg = dict(VAE_CONFIG, z_channels=latent_channels)
    m = comfy.ldm.models.autoencoder.AutoencodingEngine(  # only for its weights' names and shapes
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": cfg},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": cfg})
    randomise(m, seed)
    with torch.inference_mode():
        return comfy.sd.VAE(sd=m.state_dict())


def clip(name: str, seed: int = 2):
    """The stock text encoder of ``name`` at full size (SD1.5: CLIP-L; SDXL: CLIP-L + CLIP-G) with random weights
    (0.02, as CLIP's init), as ``comfy.sd.CLIP``; SD3's (with T5-XXL, 4.7 B) is not built: None."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    if name == "sd3":
        return None
    pair = {"sd15": (comfy.sd1_clip.SD1ClipModel, comfy.sd1_clip.SD1Tokenizer),
            "sdxl": (comfy.sdxl_clip.SDXLClipModel, comfy.sdxl_clip.SDXLTokenizer)}[name]

    class Target:
        params = {}
        clip, tokenizer = pair

    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        c = comfy.sd.CLIP(Target(), model_options={"dtype": torch.float32})
        for k, p in sorted(c.cond_stage_model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 if p.ndim > 1 else
                    torch.ones(p.shape) if k.endswith("weight") else torch.zeros(p.shape))
    return c


def clip_vision(seed: int = 3):
    """CLIP ViT-L/14 (comfy/clip_vision_config_vitl.json, 303 M), the image tower StyleDiffusion reads, as the stock
    CLIPVisionLoader builds it."""
    import comfy.clip_vision
    cfg = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")
    with torch.inference_mode():
        cv = comfy.clip_vision.ClipVisionModel(cfg)
        randomise(cv.model, seed)
    return cv


def conditioning(name: str, seed: int = 0, batch: int = 1) -> list:
    """A random CONDITIONING of ``name``'s shape ([B, tokens, context] and its pooled output)."""
    spec = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, spec.pooled, generator=g)} if spec.pooled else {}
    return [[torch.randn(batch, spec.tokens, spec.context, generator=g), extra]]
