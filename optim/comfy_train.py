"""Adapters running the pack's gradient procedures as ``comfy.samplers.Sampler`` objects driven by a stock guider (the
pattern of ComfyUI's ``comfy_extras/nodes_train.py``): ComfyUI loads the model, prepares the conditioning and applies
every patch; the procedure calls ``model_wrap`` with gradients on.

Imported only inside a ComfyUI host.
"""
from __future__ import annotations

import torch
from torch import nn

import comfy.model_management
import comfy.samplers

from ..samplers.comfy_sampler import hspace_patches, pass_options, shared_encoders
from ..hooks.hspace import ImplicitDirection
from ..hooks.unet_split import CACHE_PASS
from .hspace import TrainConfig, train_direction
from .losses import LocalCLIP, directional_clip_loss


def make_grad_safe(module: nn.Module) -> int:
    """Replace inference-mode parameters and buffers of ``module`` (what a loader node creates inside a prompt) by
    ordinary copies with the same values, so that autograd can save them for backward. This changes the cached model
    object in place, once (later calls find nothing to replace); values, devices and dtypes are unchanged. Returns how
    many tensors were replaced. Call under ``torch.inference_mode(False)``."""
    n = 0
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_inference():
                mod._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=False)
                n += 1
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_inference():
                mod._buffers[name] = b.clone()
                n += 1
    return n


class HSpaceTrainSampler(comfy.samplers.Sampler):
    """Trains the ``ImplicitDirection`` of the model's (last) h-space patch with ``optim.hspace.train_direction``
    along SIGMAS (the edit window of the training schedule). The starts are the LATENT's samples (DDIM-inverted noise
    latents, with zero added noise) or the seeded noise (with an empty LATENT), in chunks of ``batch_size``. The loss's
    images are the VAE decodes of the predicted x0 (``first_stage_model.decode``, differentiable), seen by a local
    CLIP. Returns the input latent; ``self.losses`` and ``self.direction`` hold the result."""

    WHO = "h-space training"

    def __init__(self, clip: LocalCLIP, vae, text_direction: torch.Tensor, config: TrainConfig, batch_size: int = 1):
        self.clip, self.vae, self.text_direction = clip, vae, text_direction
        self.config, self.batch_size = config, max(1, int(batch_size))
        self.losses: list[float] = []
        self.direction = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        base = extra_args["model_options"]
        patches = [p for p in hspace_patches(base) if isinstance(p.direction, ImplicitDirection)]
        if not patches:
            raise ValueError(f"{self.WHO}: the model carries no trainable h-space direction")
        direction = patches[-1].direction
        x = inner.model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        patcher = getattr(model_wrap, "model_patcher", None)  # the guider's: keep the U-Net loaded beside the VAE
        comfy.model_management.load_models_gpu([self.vae.patcher] + ([patcher] if patcher is not None else []))
        make_grad_safe(inner.diffusion_model)
        make_grad_safe(self.vae.first_stage_model)
        net = direction.net.to(x.device).float().train().requires_grad_(True)
        opts = pass_options(base)
        args = {k: v for k, v in extra_args.items() if k != "model_options"}
        text_dir = self.text_direction.to(self.clip.device)

        def call(xx, sigma, which):
            return model_wrap(xx, sigma * xx.new_ones([xx.shape[0]]), model_options=opts[which], **args)

        def pair(xx, sigma):
            with torch.no_grad():
                p_orig = call(xx, sigma, CACHE_PASS)
            return p_orig, call(xx, sigma, "edit")

        def images(p):
            z = inner.process_latent_out(p.float()).to(self.vae.device, self.vae.vae_dtype)
            return (self.vae.first_stage_model.decode(z).float() + 1) / 2

        def clip_loss(p_edit, p_src):
            with torch.no_grad():
                src = self.clip.image_features(images(p_src))
            return directional_clip_loss(self.clip.image_features(images(p_edit)), src, text_dir)

        def progress(i, total, p_edit, loss):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(i - 1, p_edit, p_edit, total)

        starts = list(x.split(self.batch_size))
        try:
            self.losses = train_direction(net.parameters(), pair, lambda xx, s: call(xx, s, "orig"), clip_loss,
                                          starts, sigmas, self.config, progress)
        finally:
            net.eval().requires_grad_(False)
            for c in shared_encoders(base):
                c.clear()
        self.direction = direction
        return latent_image
