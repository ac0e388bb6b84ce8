"""Tiny models built in the host tests (random weights; ComfyUI imported lazily, inside a booted host)."""
import torch

TINY_SDXL = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
    "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 2048, "num_heads": -1, "num_head_channels": 16,
    "use_spatial_transformer": True, "use_linear_in_transformer": True, "legacy": False, "adm_in_channels": 2816,
    "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
}


def tiny_sdxl(v_prediction=False):
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SDXL(dict(TINY_SDXL, dtype=torch.float32))
    model = config.get_model({"v_pred": torch.zeros(1)} if v_prediction else {})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def sdxl_cond(seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]


TINY_TEXT = {"num_hidden_layers": 3, "intermediate_size": 64}  # the stock widths (768, 1280): the files' widths


def tiny_sdxl_clip(embedding_directory=None):
    """A stock SDXL text encoder (comfy.sdxl_clip: CLIP-L and CLIP-G with the stock tokenizers, widths 768 and 1280)
    shrunk to 3 layers each (the penultimate layer is read), with seeded random weights (ComfyUI's layers start uninitialised)."""
    import comfy.sdxl_clip
    return _tiny_clip(comfy.sdxl_clip.SDXLClipModel, comfy.sdxl_clip.SDXLTokenizer, ("clip_l", "clip_g"),
                      embedding_directory)


def tiny_sd2_clip(embedding_directory=None):
    """The stock SD2.x text encoder (OpenCLIP-H, width 1024, its tokenizer) shrunk to 3 layers, seeded random weights."""
    import comfy.text_encoders.sd2_clip as sd2
    return _tiny_clip(sd2.SD2ClipModel, sd2.SD2Tokenizer, ("clip_h",), embedding_directory)


def _tiny_clip(model_class, tokenizer_class, names, embedding_directory):
    import comfy.sd

    class Target:
        params = {}
        clip = model_class
        tokenizer = tokenizer_class

    clip = comfy.sd.CLIP(Target(), embedding_directory=embedding_directory,
                         model_options={**{f"{n}_model_config": TINY_TEXT for n in names}, "dtype": torch.float32})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(clip.cond_stage_model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 if p.ndim > 1 else
                    torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape))
    return clip


def tiny_clip_vision(folder):
    """A tiny random CLIP vision tower built the way the stock CLIPVisionLoader builds one (its config written to
    ``folder``; weights set in inference mode, as the loader leaves them)."""
    import json
    import comfy.clip_vision
    cfg = dict(attention_dropout=0.0, dropout=0.0, hidden_act="quick_gelu", hidden_size=32, image_size=32,
               initializer_factor=1.0, initializer_range=0.02, intermediate_size=64, layer_norm_eps=1e-5,
               model_type="clip_vision_model", num_attention_heads=2, num_channels=3, num_hidden_layers=2,
               patch_size=16, projection_dim=16)
    (folder / "cv.json").write_text(json.dumps(cfg))
    with torch.inference_mode():
        cv = comfy.clip_vision.ClipVisionModel(str(folder / "cv.json"))
        g = torch.Generator().manual_seed(0)
        cv.load_sd({k: torch.randn(v.shape, generator=g) * 0.1 for k, v in cv.get_sd().items()})
    return cv


FLUX_SMALLEST = {  # the smallest model ComfyUI 0.3.75 detects as Flux: hidden 3072 and 24 heads are fixed by detection
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 768,
    "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 1, "depth_single_blocks": 0,
    "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
}


def write_random_flux(path, seed=0):
    """A random-weight Flux (1 double block, 0 single; 394 M parameters with context 768; fp16, ~750 MiB) as a diffusion-model file
    that the stock UNETLoader detects as Flux (Flux-dev: guidance embedding). Context and pooled widths 768: the
    pack's CLIP-L through CLIPLoader (type stable_diffusion) conditions it. Weights ~ N(0, 1/fan_in)·0.5, so the
    velocity stays finite; no training, no semantics."""
    import comfy.ldm.flux.model
    import comfy.ops
    from safetensors.torch import save_file
    import dataclasses
    config = dict(FLUX_SMALLEST)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = []  # newer hosts (0.33): what their detection sets for Flux-dev (no text ids dims)
    meta = comfy.ldm.flux.model.Flux(device="meta", operations=comfy.ops.disable_weight_init, **config)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in meta.state_dict().items():
        fan_in = v.shape[1] if v.ndim > 1 else 1
        t = torch.randn(v.shape, generator=g) * (0.5 / fan_in ** 0.5) if v.ndim > 1 else torch.zeros(v.shape)
        if v.ndim == 1 and "norm" in k and k.endswith((".scale", ".weight")):  # the q / k RMSNorm scales (named
            t = torch.ones(v.shape)  # .scale on 0.3.75, .weight on 0.33): zeros would make every attention uniform
        sd[k] = t.to(torch.float16)
    save_file(sd, str(path))
    return sum(v.numel() for v in sd.values())


def random_taesd(channels, seed=0):
    """A stock TAESD VAE (comfy.taesd, what VAELoader builds from a ``taesd_*`` file) for ``channels``-channel latents
    with seeded random weights: a stand-in decoder for families whose real VAE is not here (its images mean nothing;
    it lets the nodes that decode, DOODL, run)."""
    import comfy.sd
    import comfy.taesd.taesd
    shapes = comfy.taesd.taesd.TAESD(latent_channels=channels).state_dict()
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * (0.5 / max(1, v[0].numel()) ** 0.5) if v.ndim > 1 else
          torch.ones(v.shape) if k == "vae_scale" else torch.zeros(v.shape) for k, v in shapes.items()}
    import inspect
    if "metadata" in inspect.signature(comfy.sd.VAE).parameters:  # 0.33: a 128-channel TAE is Flux.2's (32 · 2 × 2
        return comfy.sd.VAE(sd=sd, metadata={"tae_latent_channels": channels})  # packed), as its file metadata says
    return comfy.sd.VAE(sd=sd)


def write_random_lora(model, path, rank=4, scale=0.05, seed=0):
    """A LoRA file (ComfyUI's generic key format, ``diffusion_model.<module>.lora_up/lora_down.weight``) for every
    attention projection of ``model`` (a ModelPatcher), seeded random factors; returns the number of layers."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.model.diffusion_model.named_parameters():
        if p.ndim == 2 and any(f".{s}.weight" in f".{name}" for s in ("to_q", "to_k", "to_v")):
            key = "diffusion_model." + name[:-len(".weight")]
            sd[key + ".lora_up.weight"] = torch.randn(p.shape[0], rank, generator=g) * scale
            sd[key + ".lora_down.weight"] = torch.randn(rank, p.shape[1], generator=g) * scale
    save_file(sd, str(path))
    return len(sd) // 2


def write_random_controlnet(model, path, seed=0):
    """A ControlNet for ``model``'s U-Net (the original ``control_model.*`` layout: comfy.cldm.cldm.ControlNet with the
    U-Net's config and a 3-channel hint), seeded random weights (zero convolutions included, so that it acts)."""
    import comfy.cldm.cldm
    import comfy.ops
    from safetensors.torch import save_file
    cfg = {k: v for k, v in model.model.model_config.unet_config.items() if k not in ("out_channels", "dtype")}
    meta = comfy.cldm.cldm.ControlNet(hint_channels=3, device="meta", operations=comfy.ops.disable_weight_init, **cfg)
    from harness.families import norm_names
    norms = norm_names(meta)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in meta.state_dict().items():
        fan_in = max(1, v[0].numel()) if v.ndim > 1 else 1
        sd["control_model." + k] = (torch.randn(v.shape, generator=g) * (0.5 / fan_in ** 0.5) if v.ndim > 1 else
                                    torch.ones(v.shape) if k in norms and k.endswith("weight") else
                                    torch.zeros(v.shape))
    save_file(sd, str(path))
    return sum(v.numel() for v in sd.values())


def random_wan_vae(dim=8, seed=0):
    """A stock Wan 2.1 VAE (what VAELoader builds for Qwen-Image's 16-channel 5-D latents; its width read from the
    file, here ``dim`` instead of 96) with seeded random weights, norm scales 1: a stand-in decoder."""
    import comfy.ldm.wan.vae
    import comfy.sd
    from harness.families import norm_names
    meta = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                    temperal_downsample=[False, True, True], dropout=0.0)
    norms = norm_names(meta) | {k for k in meta.state_dict() if k.endswith("gamma")}
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * (0.5 / max(1, v[0].numel()) ** 0.5) if v.ndim > 1 else
          torch.ones(v.shape) if k in norms else torch.zeros(v.shape) for k, v in meta.state_dict().items()}
    return comfy.sd.VAE(sd=sd)
