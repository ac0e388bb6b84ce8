"""What a capability requires of a ComfyUI model, checked once with errors that name the fix: the model family,
VP (ε / v) coordinates, a U-Net bottleneck, the latent's channel count; and the model's timestep ↔ σ table."""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.sample

from ..errors import quote


def model_family(base_model) -> str:
    """The model-config class name ComfyUI detected for a BaseModel (``SD15``, ``SDXL``, ``SD3``, ``Flux``, …)."""
    return type(base_model.model_config).__name__


# Image-to-image sampling kinds: IMG_TO_IMG (0.3.75 too; an EPS subclass, through X0 on 0.33) and 0.33's
# IMG_TO_IMG_FLOW (a CONST subclass) map an image to an image without added noise, so there is no noise trajectory
# to invert or edit along: refused by name before the EPS / CONST checks would let them through. X0 itself is a VP
# model whose denoised output the pack reads like any other's (no model type uses it alone in 0.33).
IMAGE_TO_IMAGE_SAMPLING = ("IMG_TO_IMG", "IMG_TO_IMG_FLOW")


def sampling_kind(model_sampling) -> str:
    """The sampling a model runs with, by name: ComfyUI combines a schedule and a prediction type into one class
    named ``ModelSampling`` (``model_base.model_sampling``; the stock ModelSampling* patch nodes name theirs
    ``ModelSamplingAdvanced``), so its bases are named (``ModelSamplingFlux + CONST``); any other class by its own
    name."""
    cls = type(model_sampling)
    if len(cls.__bases__) > 1:  # ModelSampling, and the ModelSamplingAdvanced of the stock sampling patches
        return " + ".join(b.__name__ for b in cls.__bases__)
    return cls.__name__


def refuse_image_to_image(model_sampling, family: str, who: str) -> None:
    """Refuse the image-to-image sampling kinds of newer hosts (``IMAGE_TO_IMAGE_SAMPLING``) by name."""
    kinds = [getattr(comfy.model_sampling, n, None) for n in IMAGE_TO_IMAGE_SAMPLING]
    hit = next((k for k in kinds if k is not None and isinstance(model_sampling, k)), None)
    if hit is not None:
        raise ValueError(f"{who}: {family} is sampled with {hit.__name__}, an image-to-image model that adds no "
                         f"noise, so there is no diffusion trajectory to invert or edit; use a text-to-image "
                         f"checkpoint (SD1.x/SDXL, SD3/Flux) with this node")


def require_vp_model(model_sampling, family: str, who: str) -> None:
    """Refuse flow-matching models for a capability defined on ε/v-prediction (VP) coordinates only."""
    refuse_image_to_image(model_sampling, family, who)
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        raise ValueError(f"{who}: this is a flow-matching model ({family} sampled with "
                         f"{sampling_kind(model_sampling)}, as SD3, Flux and the other DiTs or a ModelSamplingSD3/Flux "
                         f"patch make it), and {who} works on ε- and v-prediction models (SD1.x, SD2.x, SDXL) only. "
                         f"On a flow model use DDIM Invert, the EDICT nodes, DOODL or the EMS Edit Sampler; or give "
                         f"this node an SD1.x/SD2.x/SDXL checkpoint without a flow sampling patch.")


def context_width(model_patcher):
    """The token width a model's cross-attention / joint attention takes (U-Net ``context_dim``, Flux
    ``context_in_dim``, SD3's context embedder), or None where the config does not say."""
    uc = model_patcher.model.model_config.unet_config
    width = uc.get("context_dim") or uc.get("context_in_dim")
    if width is None:
        width = (uc.get("context_embedder_config") or {}).get("params", {}).get("in_features")
    return int(width) if width else None


def pooled_width(model_patcher):
    """The pooled-text width a DiT's vector embedder takes (Flux ``vec_in_dim``, SD3's ``adm_in_channels`` beside its
    context embedder), or None (a U-Net's ``adm_in_channels`` also holds size embeddings: not the pooled width)."""
    uc = model_patcher.model.model_config.unet_config
    if uc.get("vec_in_dim"):
        return int(uc["vec_in_dim"])
    if uc.get("context_embedder_config") and uc.get("adm_in_channels"):
        return int(uc["adm_in_channels"])
    return None


def require_conditioning_width(model_patcher, conditionings: dict, who: str) -> None:
    """Refuse a CONDITIONING encoded for another model family: its token width (or, on SD3 and Flux, its pooled
    output's width) differs from the model's. The one conditioning check: every node with a MODEL and CONDITIONING
    inputs runs it (nodes.common.add_conditioning_check), the EMS nodes and P2P Edit's own encodings too."""
    want, want_pooled = context_width(model_patcher), pooled_width(model_patcher)
    family = model_family(model_patcher.model)
    for name, cond in conditionings.items():
        for t, extra in cond or []:
            if want is not None and t.shape[-1] != want:
                raise ValueError(f"{who}: the {name} conditioning has tokens of width {t.shape[-1]}, but {family} "
                                 f"takes {want}: it was encoded for another model family. Encode the prompts with "
                                 f"this model's CLIP (the CLIP output of the same checkpoint loader).")
            pooled = (extra or {}).get("pooled_output") if isinstance(extra, dict) else None
            if want_pooled is not None and pooled is not None and pooled.shape[-1] != want_pooled:
                raise ValueError(f"{who}: the {name} conditioning has a pooled output of width {pooled.shape[-1]}, "
                                 f"but {family} takes {want_pooled}: it was encoded for another model family. Encode "
                                 f"the prompts with this model's CLIP (the CLIP output of the same checkpoint "
                                 f"loader).")


def require_latent_channels(latent: torch.Tensor, model_patcher, who: str) -> None:
    """The LATENT's channels and number of dimensions are the model's: [B, C, H, W], or [B, C, T, H, W] for a latent
    format with ``latent_dimensions`` 3 (Qwen-Image, through the Wan 2.1 VAE)."""
    fmt = model_patcher.model.latent_format
    want, dims = fmt.latent_channels, int(getattr(fmt, "latent_dimensions", 2))
    if latent.ndim != 2 + dims or latent.shape[1] != want:
        shape = "[B, {}, T, H, W]" if dims == 3 else "[B, {}, H, W]"
        raise ValueError(f"{who}: the LATENT has shape {tuple(latent.shape)} but {model_family(model_patcher.model)} "
                         f"works on {shape.format(want)} latents. Encode the image with this model's VAE.")


def is_flow(model_sampling) -> bool:
    """A flow-matching model (CONST: SD3, Flux, or a ModelSamplingSD3/Flux patch)."""
    return isinstance(model_sampling, comfy.model_sampling.CONST)


def require_vp_or_flow_model(model_sampling, family: str, who: str) -> None:
    """Accept ε/v-prediction (VP; X0 too) and flow-matching (CONST) models; refuse the other kinds by name."""
    refuse_image_to_image(model_sampling, family, who)
    if not isinstance(model_sampling, (comfy.model_sampling.EPS, comfy.model_sampling.CONST)):
        raise ValueError(f"{who}: {family} is sampled with {sampling_kind(model_sampling)}, which is neither an "
                         f"ε/v-prediction nor a flow-matching model; use an SD1.x/SDXL or SD3/Flux checkpoint")


def checked_latent(model, latent: dict, who: str, flow: bool = False) -> torch.Tensor:
    """The LATENT's samples for a VP (ε/v) model with the right channel count; refuses flow models unless ``flow``
    (the capability handles them)."""
    ms = model.get_model_object("model_sampling")
    (require_vp_or_flow_model if flow else require_vp_model)(ms, model_family(model.model), who)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    require_latent_channels(samples, model, who)
    return samples


def refuse_noise_mask(latent: dict, who: str) -> None:
    """An inversion cannot honour a latent noise mask, and the inverted LATENT would carry it into the regeneration
    (the stock samplers would then inpaint the noise)."""
    if latent.get("noise_mask") is not None:
        raise ValueError(f"{who}: the LATENT has a noise mask (Set Latent Noise Mask / inpainting), which inversion "
                         f"cannot honour and its regeneration would inpaint; remove the mask before inverting.")


def require_steps(sigmas: torch.Tensor, who: str) -> None:
    """Refuse SIGMAS without a step (ComfyUI's guider would return the latent untouched)."""
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"{who}: the SIGMAS hold {sigmas.numel()} value(s), so there is no step to invert (a "
                         f"scheduler with denoise 0 or 1 step and strength 0?); give at least one step.")


def require_unet(model, who: str):
    """The U-Net of a ModelPatcher (or of a BaseModel, inside a sampler), which must have a middle block (h-space
    lives at its output)."""
    patcher = hasattr(model, "get_model_object")
    unet = model.get_model_object("diffusion_model") if patcher else model.diffusion_model
    if getattr(unet, "middle_block", None) is None:
        raise ValueError(f"{who}: {model_family(model.model if patcher else model)} is a transformer with no U-Net "
                         f"middle block, so it has no h-space bottleneck (SD3, Flux and other DiTs have none). Use an "
                         f"SD1.x/SD2.x/SDXL checkpoint; on a DiT, DDIM Invert, the EDICT nodes, DOODL and the EMS "
                         f"Edit Sampler work.")
    return unet


def h_channels(unet) -> int:
    """Channels of h (the middle block's output): model_channels × the last channel multiplier."""
    return int(unet.model_channels * unet.channel_mult[-1])


def t_to_sigma(model, t: int) -> float:
    """σ of the model's discrete timestep t."""
    return float(model.get_model_object("model_sampling").sigma(torch.tensor(int(t))))


def log_sigmas(model, who: str) -> torch.Tensor:
    """The model's table log σ_t, t = 0 … T−1 (discrete-timestep models only)."""
    table = getattr(model.get_model_object("model_sampling"), "log_sigmas", None)
    if table is None:
        raise ValueError(f"{who}: this model's sampling has no discrete timestep table; trained h-space directions "
                         f"need one (SD1.x/SD2.x/SDXL without a continuous-σ patch).")
    return table.detach().float().cpu()


def require_embedding_files(clip, text: str, who: str, name: str = "prompt") -> None:
    """Refuse an ``embedding:<name>`` word of ``text`` for which the CLIP's tokenizer finds no file (ComfyUI only
    logs it and reads the words): a typo, a folder path, a file in another folder. Each such word is tokenized alone:
    a found embedding gives its vectors (tensors) among the tokens."""
    for word in text.split():
        if not word.startswith("embedding:"):
            continue
        chunks = next(iter(clip.tokenize(word).values()))
        if not any(isinstance(t[0] if isinstance(t, tuple) else t, torch.Tensor) for c in chunks for t in c):
            raise ValueError(f"{who}: {quote(word)} in the {name} names no embedding file in models/embeddings "
                             f"(ComfyUI would read it as plain words); check the file name (no folders), or remove it")
