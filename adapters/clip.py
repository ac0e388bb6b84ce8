"""CLIP encoders made usable by the pack's gradient loops inside ComfyUI: a transformers CLIP from a local folder on
ComfyUI's device (``load_local_clip``), a stock CLIP_VISION made differentiable (``ComfyCLIPVision``), and a stock
CLIP's text encoder differentiable in its token embeddings (``differentiable_text_encoder``)."""
from __future__ import annotations

import contextlib
import types
from pathlib import Path

import torch

import comfy.model_management
from comfy.ldm.modules.attention import optimized_attention_for_device

from .. import artifacts
from ..losses.clip import CLIPLoadError, LocalCLIP, clip_preprocess
from .run import current_copies, private_for_grad, private_patcher


def load_local_clip(folder: Path, who: str) -> LocalCLIP:
    """``losses.clip.LocalCLIP`` from ``folder`` on ComfyUI's torch device (call with gradients allowed). A pickle
    renamed to model.safetensors is told apart by its first bytes (never unpickled)."""
    weights = Path(folder) / "model.safetensors"
    if weights.is_file() and artifacts.is_pickle(weights):
        raise ValueError(f"{who}: {Path(folder).name}/model.safetensors is a pickle (a .bin or .ckpt renamed); "
                         f"pickles are never loaded; convert it on a machine you trust: load it with transformers, "
                         f"then save_pretrained(safe_serialization=True)")
    try:
        return LocalCLIP(folder, comfy.model_management.get_torch_device(), who)
    except CLIPLoadError as e:
        raise ValueError(str(e)) from None


class ComfyCLIPVision:
    """A stock CLIP_VISION (CLIPVisionLoader) as a differentiable image encoder for ``losses.pixel.CLIPLoss``: the
    crops go through ``clip_preprocess`` (differentiable; ComfyUI's own rounds to 8 bits) with the model's size, mean
    and std, then the vision tower; the projected embedding (``image_embeds``) is L2-normalised. The tower is
    that of the running gradient node's private copy (``adapters.run.private_for_grad``: made on first use, loaded
    whole, released with the node) inside a gradient node; elsewhere (no gradient: a judge, the probe's features) the
    shared model, loaded on every call.

    The tower runs through ``forward``, ComfyUI 0.3.75's ``CLIPVision`` forward (comfy/clip_model.py) with the
    residual additions out of place: its layers add in place (``x += …``), which autograd refuses. A test checks the
    two give the same embedding. CLIP towers only (SigLIP has no class token to pool)."""

    def __init__(self, clip_vision):
        if getattr(clip_vision.model.vision_model, "output_layernorm", False):
            raise ValueError("a SigLIP CLIP_VISION is not supported by the DOODL CLIP loss; use a CLIP one "
                             "(e.g. clip_vision_g / ViT-L/14)")
        self.cv = clip_vision
        self.device = clip_vision.load_device
        self.size = int(clip_vision.image_size)
        self.mean = torch.tensor(clip_vision.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(clip_vision.image_std).view(1, 3, 1, 1)

    def tower(self, images: torch.Tensor):
        """The CLIP vision model to run: the running gradient node's private copy; outside one, the shared model, or
        when gradients are asked for a private copy for this call (the shared weights are inference tensors, which
        autograd cannot save)."""
        copies = current_copies()
        if copies is not None:
            cv = copies.of(self.cv)
            copies.load([cv.patcher])
            return cv.model
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():  # outside a gradient node: a copy
            # for this call only (a loader's parameters may ask for gradients: an inference tensor autograd refuses)
            with torch.inference_mode(False):
                solo = private_patcher(self.cv.patcher, "CLIP vision")
                solo.patch_model(device_to=solo.load_device)
            return solo.model
        comfy.model_management.load_model_gpu(self.cv.patcher)
        return self.cv.model

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        model = self.tower(images)
        x = clip_preprocess(images.to(self.device, torch.float32), self.size, self.mean, self.std)
        return torch.nn.functional.normalize(self.forward(x, model).float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor, model=None) -> torch.Tensor:
        model = self.cv.model if model is None else model
        vm = model.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixel_values))
        attention = optimized_attention_for_device(x.device, mask=False, small_input=True)
        for layer in vm.encoder.layers:
            x = x + layer.self_attn(layer.layer_norm1(x), None, attention)
            x = x + layer.mlp(layer.layer_norm2(x))
        return model.visual_projection(vm.post_layernorm(x[:, 0, :]))


def _residual_forward(layer, x, mask=None, optimized_attention=None):
    """comfy.clip_model.CLIPLayer.forward with the residuals added out of place (the same values)."""
    x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
    return x + layer.mlp(layer.layer_norm2(x))


@contextlib.contextmanager
def differentiable_text_encoder(clip, who: str = "differentiable text encoder"):
    """Yields a private copy of a stock CLIP (the running gradient node's, ``adapters.run.private_for_grad``; its own
    context when none runs) whose text encoder(s) can be differentiated with respect to the embeddings in its token
    list (a textual-inversion vector, CASO's class embedding): ComfyUI's CLIP layers add their residuals in place
    (``x += …``), which autograd refuses, so each of the copy's layers runs an out-of-place forward with the same
    arithmetic (a host test checks the encodings are bit-identical). Encode with the yielded CLIP; ``clip`` itself is
    not changed."""
    from comfy.clip_model import CLIPLayer
    with contextlib.ExitStack() as stack:
        copies = current_copies() or stack.enter_context(private_for_grad(who))
        private = copies.of(clip)
        copies.load([private.patcher])
        for layer in (m for m in private.cond_stage_model.modules() if isinstance(m, CLIPLayer)):
            layer.forward = types.MethodType(_residual_forward, layer)
        yield private
