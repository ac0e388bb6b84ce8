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

from ..hooks.hspace import ImplicitDirection
from ..hooks.unet_split import CACHE_PASS
from ..samplers import edict
from ..samplers.comfy_sampler import EDICTOptions, _EDICTBase, hspace_patches, pass_options, shared_encoders
from ..samplers.coords import vp_scale
from .doodl import ChainSpec, DOODLConfig, doodl_optimize, one_step_guidance_sample, pair_loss_gradients
from .hspace import TrainConfig, train_direction
from .losses import LocalCLIP, clip_preprocess, directional_clip_loss


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


class DOODLSampler(_EDICTBase):
    """DOODL (``optim.doodl.doodl_optimize``) as a Sampler run through a guider: optimises the EDICT start pair so
    that the decoded end of the chain lowers ``loss`` (a pixel loss from ``optim.losses``). Starts from the noise
    (generation: x_T = y_T, tied and renormalised) or from ``pair`` (VP latents at sigmas[0] from EDICT Invert:
    untied, not renormalised, as ``config`` says). Returns the chosen iterate's x_0; ``self.result_pair`` holds the
    optimised (x_T, y_T), ``self.losses`` the loss of every evaluated iterate. Each iteration shows the current x_0
    as the preview; interrupt is checked at every model step."""

    WHO = "DOODL"

    def __init__(self, vae, loss, config: DOODLConfig, options: EDICTOptions = EDICTOptions(), mode: str = "reversible",
                 pair=None, seed: int = 0):
        super().__init__(options)
        self.vae, self.loss, self.config, self.mode, self.start_pair = vae, loss, config, mode, pair
        self.generator = torch.Generator().manual_seed(int(seed))
        self.losses: list[float] = []
        self.gaps: list[float] = []  # ‖x_0 − y_0‖/‖x_0‖ of every evaluated iterate (diagnostics)
        self.result_pair = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        denoiser, kw, sdev = self._setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, None, noise)
        inner = model_wrap.inner_model
        patcher = getattr(model_wrap, "model_patcher", None)
        comfy.model_management.load_models_gpu([self.vae.patcher] + ([patcher] if patcher is not None else []))
        make_grad_safe(inner.diffusion_model)
        make_grad_safe(self.vae.first_stage_model)
        if self.start_pair is not None:
            zx, zy = (z.to(sdev, self.dtype) for z in self.start_pair)
        else:
            full = self.max_denoise(model_wrap, sigmas) or torch.count_nonzero(latent_image) == 0
            x = inner.model_sampling.noise_scaling(sigmas[0], noise, latent_image, full)
            zx = zy = x.to(sdev, self.dtype) / vp_scale(sigmas[0].to(sdev, self.dtype))
        end = edict.end_sigma(sigmas).to(sdev, self.dtype)
        dev, mdtype = latent_image.device, latent_image.dtype

        def model_space(z):
            return (z * vp_scale(end)).to(dev, mdtype)

        def decode_loss(z):
            img = self.vae.first_stage_model.decode(
                inner.process_latent_out(model_space(z)).to(self.vae.device, self.vae.vae_dtype)).float()
            return self.loss(((img + 1) / 2).clamp(0, 1), self.generator)  # as the official code

        def on_step(i, of):
            comfy.model_management.throw_exception_if_processing_interrupted()

        chosen, best = {}, [float("inf")]

        def on_iteration(i, of, loss, x0, y0):
            comfy.model_management.throw_exception_if_processing_interrupted()
            self.losses.append(loss)
            self.gaps.append(float((x0 - y0).norm() / x0.norm().clamp(min=1e-12)))
            if self.config.keep != "best" or loss < best[0]:  # the same rule as doodl_optimize's
                best[0] = loss
                chosen.update(x=x0, y=y0)
            if callback is not None:
                callback(i, model_space(x0), model_space(x0), of + 1)

        spec = ChainSpec(denoiser, sigmas.to(sdev), self.options.p, self.options.leapfrog,
                         self.options.official_input_scaling, self.dtype, mdtype, self.mode, on_step)
        res = doodl_optimize(spec, pair_loss_gradients(decode_loss), zx, zy, self.config, self.generator,
                             on_iteration)
        self.result_pair = (res.x, res.y)
        self.pair, self._end, self._like = (chosen["x"], chosen["y"]), end, latent_image
        return self.result("x").to(latent_image.dtype)


class OneStepGuidanceSampler(comfy.samplers.Sampler):
    """The DOODL paper's baseline (``optim.doodl.one_step_guidance_sample``) as a SAMPLER: DDIM whose x0 estimate is
    pushed down the gradient of a pixel loss of its decode at every step (one model call with gradients, one VAE
    decode and one loss backward per step)."""

    WHO = "one-step guidance"

    def __init__(self, vae, loss, scale: float, seed: int = 0):
        self.vae, self.loss, self.scale, self.seed = vae, loss, float(scale), int(seed)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        from ..samplers.comfy_sampler import model_family, require_vp_model
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        if denoise_mask is not None:
            raise ValueError(f"{self.WHO}: latent noise masks are not supported.")
        generator = torch.Generator().manual_seed(self.seed)
        total = sigmas.numel() - 1
        with torch.inference_mode(False), torch.enable_grad():
            patcher = getattr(model_wrap, "model_patcher", None)
            comfy.model_management.load_models_gpu([self.vae.patcher] + ([patcher] if patcher is not None else []))
            make_grad_safe(inner.diffusion_model)
            make_grad_safe(self.vae.first_stage_model)
            args = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in extra_args.items()}
            x = inner.model_sampling.noise_scaling(sigmas[0], noise.clone(), latent_image.clone(),
                                                   self.max_denoise(model_wrap, sigmas))
            s_in = x.new_ones([x.shape[0]])

            def denoiser(xx, sigma):
                return model_wrap(xx, sigma * s_in, **args)

            def loss_of_x0(d):
                img = self.vae.first_stage_model.decode(
                    inner.process_latent_out(d).to(self.vae.device, self.vae.vae_dtype)).float()
                return self.loss(((img + 1) / 2).clamp(0, 1), generator)

            def on_step(i, xx, d):
                comfy.model_management.throw_exception_if_processing_interrupted()
                if callback is not None:
                    callback(i, d, xx, total)

            out = one_step_guidance_sample(denoiser, loss_of_x0, x, sigmas.clone(), self.scale, on_step)
        return inner.model_sampling.inverse_noise_scaling(sigmas[-1], out.detach())


class ComfyCLIPVision:
    """A stock CLIP_VISION (CLIPVisionLoader) as a differentiable image encoder for ``optim.losses.CLIPLoss``: the
    crops go through ``clip_preprocess`` (differentiable; ComfyUI's own rounds to 8 bits) with the model's size, mean
    and std, then the vision tower; the projected embedding (``image_embeds``) is L2-normalised. The model is made
    grad-safe (its weights were created in inference mode by the loader) and loaded on every call.

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

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        comfy.model_management.load_model_gpu(self.cv.patcher)
        make_grad_safe(self.cv.model)
        x = clip_preprocess(images.to(self.device, torch.float32), self.size, self.mean, self.std)
        return torch.nn.functional.normalize(self.forward(x).float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention_for_device
        model = self.cv.model
        vm = model.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixel_values))
        attention = optimized_attention_for_device(x.device, mask=False, small_input=True)
        for layer in vm.encoder.layers:
            x = x + layer.self_attn(layer.layer_norm1(x), None, attention)
            x = x + layer.mlp(layer.layer_norm2(x))
        return model.visual_projection(vm.post_layernorm(x[:, 0, :]))
