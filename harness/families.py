"""The image-model families of the family matrix (issue 26): for each, a random-weight diffusion-model file shrunk as
far as the host's stock detection allows, written in ComfyUI's own save format so that the stock ``UNETLoader`` loads
it; the family's latent shape; and a stand-in for its text encoder's output (seeded random tokens of the width the
model takes, plus the pooled vector where the family has one: the real encoders, T5-XXL, Qwen2.5-VL-7B, Mistral-24B,
are far too large here, and the nodes only ever see the CONDITIONING tensors).

How a file is made (``write``): ``seed`` gives the keys ComfyUI's detection reads (meta tensors, shapes only) or, for
the U-Nets, a whole shrunk U-Net; ``comfy.model_detection.model_config_from_unet`` detects the family from them
exactly as a loader would; the detected config builds the stock model on the meta device; every parameter it has gets
seeded values (ComfyUI's layers start uninitialised, so a missing key would be garbage); the file is the model
config's ``process_unet_state_dict_for_saving`` of that, i.e. what ComfyUI itself would save. The shrinking rules and
what each family's detection pins are in docs/research/comfyui-family-detection.md. ComfyUI is imported lazily (inside
a booted host)."""
from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class Family:
    label: str                 # the name users know (table rows)
    config: str                # the model-config class ComfyUI detects (``adapters.checks.model_family``)
    latent: tuple              # the LATENT's samples shape (batch 1)
    context: int               # the token width of the conditioning
    pooled: int | None = None  # the pooled vector's width, where the family has one
    tokens: int = 8
    detected_by: str = ""      # what the detection pins, for the table
    heavy: tuple = ()          # hosts ("0.3.75", "0.33") where detection forces a large model: `make test-slow`
    extra_cond: tuple = ()     # (key, shape) of other conditioning tensors the family requires


def _unet(cls_name, **cfg):
    """A shrunk U-Net built by the stock model-config class (its ``unet_extra_config`` applied), as a meta state
    dict: detection reads its keys exactly as it reads a real checkpoint's."""
    import comfy.supported_models
    base = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
                use_spatial_transformer=True, legacy=False, num_res_blocks=[1], channel_mult=[1],
                transformer_depth=[1], transformer_depth_output=[0, 1], transformer_depth_middle=1,
                use_temporal_attention=False, use_temporal_resblock=False, adm_in_channels=None)
    base.update(cfg)
    config = getattr(comfy.supported_models, cls_name)(base)
    model = config.get_model({}, device="meta")
    return dict(model.diffusion_model.state_dict())


def _meta(**shapes):
    return {k.replace("__", "."): torch.empty(s, device="meta") for k, s in shapes.items()}


def _sd15():
    return _unet("SD15", context_dim=768, use_linear_in_transformer=False)


def _sd21v():
    sd = _unet("SD20", context_dim=1024, use_linear_in_transformer=True)
    # SD20.model_type: v-prediction where this tensor's std > 0.09; read before loading, an "unexpected" key after
    sd["output_blocks.11.1.transformer_blocks.0.norm1.bias"] = torch.randn(
        320, generator=torch.Generator().manual_seed(0)) * 0.2
    return sd


def _sdxl():
    return _unet("SDXL", context_dim=2048, use_linear_in_transformer=True, adm_in_channels=2816,
                 num_classes="sequential", num_res_blocks=[2, 2, 2], channel_mult=[1, 1, 1],
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0] * 9, transformer_depth_middle=1)


def _sd35():
    # hidden = 64 · depth, heads = depth, blocks = depth; qk RMSNorm as SD3.5
    return _meta(joint_blocks__0__context_block__attn__qkv__weight=(384, 128), x_embedder__proj__weight=(128, 16, 2, 2),
                 final_layer__linear__weight=(64, 128), y_embedder__mlp__0__weight=(128, 64),
                 context_embedder__weight=(128, 64), pos_embed=(1, 256, 128),
                 joint_blocks__0__context_block__attn__ln_q__weight=(64,))


def _flux_like(hidden, context, flux2=False, chroma=False, vec=None):
    """1 double block, and 1 single block where the width is free (none at the fixed 3072 / 6144: 137 / 490 M each)."""
    shapes = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "txt_in.weight": (hidden, context),
              "double_blocks.0.x": (1,)}
    if hidden == 128:
        shapes["single_blocks.0.x"] = (1,)
    if flux2:
        shapes.update({"img_in.weight": (hidden, 128), "double_stream_modulation_img.lin.weight": (6 * hidden, hidden),
                       "guidance_in.in_layer.weight": (hidden, 256)})
    elif chroma:
        shapes.update({"distilled_guidance_layer.norms.0.scale": (5120,), "img_in.weight": (hidden, 64)})
    else:
        shapes.update({"img_in.weight": (hidden, 64), "guidance_in.in_layer.weight": (hidden, 256)})
    if vec:
        shapes["vector_in.in_layer.weight"] = (hidden, vec)
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _flux_hidden():
    """3072 where the host's detection fixes 24 heads of 128 (0.3.75); 128 (one head) where it derives the heads
    from the width (0.33)."""
    import comfy.ldm.flux.model
    newer = "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    return 128 if newer else 3072


def _flux1():
    return _flux_like(_flux_hidden(), 64, vec=64)


def _flux2():
    return _flux_like(128 if _flux_hidden() == 128 else 6144, 64, flux2=True)


def _chroma():
    return _flux_like(3072, 64, chroma=True)  # the approximator's 3072-wide output fixes the width on both hosts


def _qwen():
    return _meta(txt_norm__weight=(3584,), img_in__weight=(3072, 64), transformer_blocks__0__x=(1,))


def _zimage(context=64):
    return _meta(cap_embedder__1__weight=(3840, context), noise_refiner__0__attention__k_norm__weight=(128,),
                 layers__0__x=(1,))


# HiDream: detection returns the full model whatever the weights (16 double + 32 single blocks, 20 heads of 128,
# 4 routed experts, text widths 4096: 17 B parameters), so the family is built directly with the stock model config
# at its smallest (``DIRECT``) and loaded as comfy.sd.load_diffusion_model_state_dict loads a detected model
# (``load_direct``). 2 Llama layers of hidden states, as ComfyUI's HiDream text encoder hands them per block.
DIRECT = {"HiDream": dict(image_model="hidream", attention_head_dim=128, axes_dims_rope=[64, 32, 32],
                          caption_channels=[64, 64], max_resolution=[128, 128], in_channels=16, out_channels=16,
                          llama_layers=[0, 1], num_attention_heads=1, num_routed_experts=4, num_activated_experts=2,
                          num_layers=1, num_single_layers=1, patch_size=2, text_emb_dim=64)}


def _hidream():
    return {}  # built directly (DIRECT): no keys for the detection


def _hunyuan21(context=64):
    return {"txt_in.individual_token_refiner.blocks.0.norm1.weight": torch.empty(128, device="meta"),
            "img_in.proj.weight": torch.empty(128, 64, 1, 1, device="meta"),
            "final_layer.linear.weight": torch.empty(64, 128, device="meta"),
            "txt_in.input_embedder.weight": torch.empty(128, context, device="meta"),
            "double_blocks.0.x": torch.empty(1, device="meta"), "single_blocks.0.x": torch.empty(1, device="meta")}


FAMILIES = {f.label: f for f in (
    Family("SD1.5", "SD15", (1, 4, 8, 8), 768, detected_by="320 channels, context 768 (class pins); 1 level, "
           "1 res block, 1 transformer in, middle and out"),
    Family("SD2.1-v", "SD20", (1, 4, 8, 8), 1024, detected_by="as SD1.5 with context 1024, linear projections; "
           "v-prediction from the std of output_blocks.11…norm1.bias (a sentinel tensor)"),
    Family("SDXL", "SDXL", (1, 4, 8, 8), 2048, pooled=1280, detected_by="input transformer depths [0,0,2,2,10,10] "
           "pinned; channel_mult [1,1,1], no output transformers"),
    Family("SD3.5", "SD3", (1, 16, 8, 8), 64, pooled=64, detected_by="hidden 64·depth: depth 2, context and pooled "
           "64, qk RMSNorm"),
    Family("Flux.1", "Flux", (1, 16, 8, 8), 64, pooled=64, heavy=("0.3.75",),
           detected_by="24 heads of 128 on 0.3.75 (hidden 3072): 1 double block; hidden 128 on 0.33: 1 double + 1 single"),
    Family("Flux.2", "Flux2", (1, 128, 4, 4), 64, heavy=("0.3.75",),
           detected_by="48 heads of 128 on 0.3.75 (hidden 6144): 1 double block; hidden 128 on 0.33: 1 double + 1 single"),
    Family("Chroma", "Chroma", (1, 16, 8, 8), 64, heavy=("0.3.75", "0.33"),
           detected_by="hidden 3072 and the 5-layer 5120-wide approximator fixed; 1 double block"),
    Family("Qwen-Image", "QwenImage", (1, 16, 1, 8, 8), 3584, heavy=("0.3.75", "0.33"),
           detected_by="24 heads of 128 and text width 3584 fixed; 1 block; 5-D latents"),
    Family("Z-Image", "ZImage", (1, 16, 8, 8), 64, heavy=("0.3.75", "0.33"),
           detected_by="dim 3840 pinned (else Lumina 2), 2 + 2 refiner blocks fixed; 1 layer, caption width 64"),
    Family("HunyuanImage 2.1", "HunyuanImage21", (1, 64, 4, 4), 64,
           detected_by="hidden 128·heads: 1 head, 1 double + 1 single block, 2-D patch, no vector_in"),
    Family("HiDream", "HiDream", (1, 16, 8, 8), 64, pooled=64, extra_cond=(("conditioning_llama3", (2, 8, 64)),),
           detected_by="detection pins the full 17 B model (16 + 32 blocks, 20 heads, text widths 4096), so it is "
           "built directly with the stock HiDream config: 1 + 1 blocks, 1 head of 128, 4 experts, text widths 64, "
           "2 Llama layers"),
)}

SEEDS = {"SD1.5": _sd15, "SD2.1-v": _sd21v, "SDXL": _sdxl, "SD3.5": _sd35, "Flux.1": _flux1, "Flux.2": _flux2,
         "Chroma": _chroma, "Qwen-Image": _qwen, "Z-Image": _zimage, "HunyuanImage 2.1": _hunyuan21,
         "HiDream": _hidream}


def _seed(label, context=None):
    """The family's seed keys; ``context``: another text width, for the families whose detection reads it from the
    weights (Z-Image, HunyuanImage 2.1: the example templates' CLIP-L stand-in gives 768)."""
    return SEEDS[label](**({} if context is None else {"context": context}))


def detect(label, context=None):
    """The model config the host's detection gives this family's seed keys (None: no match); for a family built
    directly (``DIRECT``), the stock model-config class with the family's small config."""
    import comfy.model_detection
    import comfy.supported_models
    if label in DIRECT:
        return getattr(comfy.supported_models, FAMILIES[label].config)(dict(DIRECT[label]))
    return comfy.model_detection.model_config_from_unet(_seed(label, context), "")


def load_direct(label, path):
    """The ModelPatcher of a directly built family's file: what comfy.sd.load_diffusion_model_state_dict does once
    detection has given a config (inference dtype and manual cast for the device, weights in, ModelPatcher)."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    sd = comfy.utils.load_torch_file(str(path))
    sd = comfy.utils.state_dict_prefix_replace(sd, {comfy.model_detection.unet_prefix_from_state_dict(sd): ""},
                                               filter_keys=True)
    config = detect(label)
    sd = config.process_unet_state_dict(sd)
    load, offload = mm.get_torch_device(), mm.unet_offload_device()
    dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                          supported_dtypes=list(config.supported_inference_dtypes),
                          weight_dtype=comfy.utils.weight_dtype(sd))
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load, config.supported_inference_dtypes))
    model = config.get_model(sd, "").to(offload)
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load, offload_device=offload)


def _value(name, shape, g, norm=False):
    if name.endswith("norm1.bias") and "output_blocks.11" in name:
        return torch.randn(shape, generator=g) * 0.2  # the SD2 v-prediction sentinel (std > 0.09)
    if len(shape) > 1:  # weights ~ N(0, 1/fan_in) · 0.5: activations stay O(1) through the random layers
        return torch.randn(shape, generator=g) * (0.5 / math.prod(shape[1:]) ** 0.5)
    if norm and name.rsplit(".", 1)[-1] in ("weight", "scale"):
        return torch.ones(shape)  # a normalisation's scale: zeros would null every normalised activation
    return torch.zeros(shape) if name.rsplit(".", 1)[-1] in ("bias", "weight", "scale") else \
        torch.randn(shape, generator=g) * 0.02  # embeddings, tokens, positions


def norm_names(module) -> set:
    """Parameter names of the normalisation layers (any module class named *Norm*: GroupNorm, LayerNorm, RMSNorm …)."""
    return {f"{m}.{p}" if m else p for m, mod in module.named_modules() if "Norm" in type(mod).__name__
            for p, _ in mod.named_parameters(recurse=False)}


def write(label, path, dtype=torch.float16, seed=0, context=None, metadata=None):
    """Write the family's random-weight diffusion-model file; returns (model config class name, parameter count)."""
    from safetensors.torch import save_file
    seed_sd = _seed(label, context)
    config = detect(label, context)
    if config is None:
        raise RuntimeError(f"{label}: the host's detection matches no model config for the seed keys")
    model = config.get_model(seed_sd, "", device="meta")
    g = torch.Generator().manual_seed(seed)
    norms = norm_names(model.diffusion_model)
    sd = {k: _value(k, tuple(v.shape), g, k in norms).to(dtype) for k, v in model.diffusion_model.state_dict().items()}
    n = sum(v.numel() for v in sd.values())
    extra = {k: _value(k, tuple(v.shape), g).to(dtype) for k, v in seed_sd.items() if k not in sd and
             not k.endswith(".x")}  # marker tensors the detection reads (the SD2 v sentinel)
    save_file(config.process_unet_state_dict_for_saving({**sd, **extra}), str(path), metadata=metadata)
    return type(config).__name__, n


def conditioning(family: Family, seed=0, batch=1):
    """A stand-in CONDITIONING for the family: seeded tokens of its width, its pooled vector (or None: 0.3.75's
    Flux-derived models index ``pooled_output``)."""
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, family.pooled, generator=g) if family.pooled else None}
    tokens = torch.randn(batch, family.tokens, family.context, generator=g)
    extra.update({k: torch.randn(batch, *shape, generator=g) for k, shape in family.extra_cond})
    return [[tokens, extra]]


def latent(family: Family, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(family.latent, generator=g)}
