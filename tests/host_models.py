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
    import comfy.sd
    import comfy.sdxl_clip

    class Target:
        params = {}
        clip = comfy.sdxl_clip.SDXLClipModel
        tokenizer = comfy.sdxl_clip.SDXLTokenizer

    clip = comfy.sd.CLIP(Target(), embedding_directory=embedding_directory,
                         model_options={"clip_l_model_config": TINY_TEXT, "clip_g_model_config": TINY_TEXT,
                                        "dtype": torch.float32})
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
