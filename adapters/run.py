"""Running the pack's samplers and gradient loops inside ComfyUI: through a stock guider (conditioning, model
loading, patches, wrappers, previews), with marked passes, and with gradients through ComfyUI's own models."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.utils.checkpoint
from torch import nn

import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import comfy.utils
import latent_preview

from ..hooks.passes import PASS_KEY, PASSES


def run_with_cfg_guider(model, positive, negative, cfg: float, sampler, samples: torch.Tensor,
                        sigmas: torch.Tensor, on_step=None, noise: Optional[torch.Tensor] = None,
                        preview_steps: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """Run a Sampler through a stock CFGGuider with ComfyUI's preview callback and progress bar (over
    ``preview_steps``, default the SIGMAS' steps) and zero added noise unless ``noise`` is given;
    ``on_step(i, denoised, x, total)`` also sees every step."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    preview = latent_preview.prepare_callback(model, preview_steps or sigmas.shape[-1] - 1, {})

    def callback(i, denoised, x, total):
        if on_step is not None:
            on_step(i, denoised, x, total)
        preview(i, denoised, x, total)

    return guider.sample(torch.zeros_like(samples) if noise is None else noise, samples, sampler, sigmas,
                         callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def pass_options(model_options: dict) -> dict:
    """A copy of ``model_options`` per pass of ``hooks.passes`` (orig, orig_cache, edit), each marking its model
    calls with that pass."""
    opts = {}
    for which in PASSES:
        opts[which] = comfy.model_patcher.create_model_options_clone(model_options)
        opts[which].setdefault("transformer_options", {})[PASS_KEY] = which
    return opts


@contextlib.contextmanager
def grad_context():
    """Gradients on inside a node (ComfyUI runs nodes under inference mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def make_grad_safe(module: nn.Module) -> int:
    """Replace inference-mode parameters and buffers of ``module`` (what a loader node creates inside a prompt) by
    ordinary copies with the same values, so that autograd can save them for backward, and freeze the others
    (requires_grad off: a model built outside a prompt would otherwise get a gradient for every weight, the model's
    size again in memory and a weight-gradient pass in time). This changes the cached model object in place, once
    (later calls find nothing to replace); values, devices and dtypes are unchanged. Returns how many tensors were
    replaced. Call under ``torch.inference_mode(False)``."""
    n = 0
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_inference():
                mod._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=False)
                n += 1
            elif p is not None and p.requires_grad:
                p.requires_grad_(False)
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_inference():
                mod._buffers[name] = b.clone()
                n += 1
    return n


def checkpoint_blocks(module: nn.Module) -> list:
    """The highest sub-modules of ``module`` with a forward of their own, looking through ModuleList / Sequential /
    ModuleDict and through plain ``nn.Module()`` holders (no forward: their parent calls their children itself):
    a U-Net's ResBlocks, SpatialTransformers and samplers (TimestepEmbedSequential is a Sequential), an MMDiT's joint
    blocks, a VAE decoder's ResnetBlocks, attention and upsamplers (its ``mid`` and ``up[i]`` are holders).
    ComfyUI's LoRA training (comfy_extras/nodes_train.py) checkpoints the same set but for the holders."""
    out = []
    for child in module.children():
        holder = (isinstance(child, (nn.ModuleList, nn.Sequential, nn.ModuleDict))
                  or type(child).forward is nn.Module.forward)
        out += checkpoint_blocks(child) if holder else [child]
    return out


@contextlib.contextmanager
def block_checkpointing(*modules: Optional[nn.Module], enabled: bool = True):
    """Gradient checkpointing per block inside this context: each of ``checkpoint_blocks(module)`` runs, while
    gradients are on, as a non-reentrant ``torch.utils.checkpoint`` segment, so that the backward pass keeps only the
    blocks' inputs and recomputes one block's activations at a time (the same values and gradients; about one more
    forward in time). The blocks get their own forward back on exit. ``enabled`` False: nothing changes."""
    blocks = [b for m in modules if enabled and m is not None for b in checkpoint_blocks(m)]

    def wrap(block):
        forward = block.forward

        def checkpointed(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            # ComfyUI's models hand transformer_options down as one dict that they change while they run (the block
            # being run, its transformer index: the keys of the attention patches); each block gets a shallow copy
            # of what it was given, so that its recomputation in the backward pass sees the same
            args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return checkpointed

    own = [b.__dict__.get("forward") for b in blocks]  # a forward already set on the instance is put back
    for b in blocks:
        b.forward = wrap(b)
    try:
        yield len(blocks)
    finally:
        for b, f in zip(blocks, own):
            if f is None:
                del b.forward
            else:
                b.forward = f


def vae_decoder(vae) -> nn.Module:
    """The decoder of a stock VAE (AutoencoderKL's ``decoder``, TAESD's ``taesd_decoder``; else the whole model): what
    block_checkpointing recomputes of a decode."""
    fsm = vae.first_stage_model
    return getattr(fsm, "decoder", None) or getattr(fsm, "taesd_decoder", None) or fsm


def load_for_grad(model_wrap, vae) -> None:
    """Load the guider's U-Net beside the VAE and make both grad-safe (``make_grad_safe``), for a loop that
    differentiates through them."""
    patcher = getattr(model_wrap, "model_patcher", None)
    comfy.model_management.load_models_gpu([vae.patcher] + ([patcher] if patcher is not None else []))
    make_grad_safe(model_wrap.inner_model.diffusion_model)
    make_grad_safe(vae.first_stage_model)


def decode_01(vae, base_model, x: torch.Tensor) -> torch.Tensor:
    """A model-space latent → [B, 3, H, W] pixels in [0, 1] (not clamped), differentiable: the VAE's own decoder
    (``first_stage_model.decode``; the VAE node's ``decode`` is not)."""
    z = base_model.process_latent_out(x).to(vae.device, vae.vae_dtype)
    return (vae.first_stage_model.decode(z).float() + 1) / 2
