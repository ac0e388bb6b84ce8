"""Training an implicit h-space direction (``optim.hspace``) on a ComfyUI model: the loop runs as a
``comfy.samplers.Sampler`` through a stock CFGGuider (the pattern of ComfyUI's ``comfy_extras/nodes_train.py``), so
ComfyUI loads the model, prepares the conditioning and applies every patch; the shifted pass reuses the encoder
(``hooks.unet_split``), so each loss graph spans the decoder, the VAE decode and CLIP only.

The official loss's CLIP source x0 (``optim.hspace``, loss "official") is the VAE decode of the training latent (init
inverted: the node gets latents, the official code the image itself) or, for init random, of the plain DDIM sample of
the same noise over the whole schedule (the official ``random_noise_pairs`` with saved samples; without them the
official code compares with an all-zero image, a quirk not reproduced). Its CLIP embedding is computed once per
start."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..hooks.directions import DeltaNet, ImplicitDirection
from ..hooks.hspace import HSpacePatch, sigma_to_t
from ..hooks.passes import CACHE, EDIT, ORIG
from ..losses.clip import LocalCLIP
from ..losses.directional import IMAGENET_TEMPLATES, directional_clip_loss
from ..optim.hspace import TrainConfig, TrainingError, loss_summary, train_direction
from .asyrp import hspace_patches, with_shared_encoder
from .checks import checked_latent, h_channels, log_sigmas, model_family, require_unet, t_to_sigma
from .ddim import DDIMInversionSampler
from .fingerprint import META_KEY, fingerprint, to_meta
from .hspace import ddim_sigmas
from .progress import LiveLoss, reporter
from .run import decode_01, grad_context, load_for_grad, pass_options, private_for_grad, run_with_cfg_guider


class HSpaceTrainSampler(comfy.samplers.Sampler):
    """Trains the ``ImplicitDirection`` of the model's (last) h-space patch with ``optim.hspace.train_direction``
    along SIGMAS (the edit window of the training schedule). The starts are the LATENT's samples (DDIM-inverted noise
    latents, with zero added noise) or the seeded noise (with an empty LATENT), in chunks of ``batch_size``. The loss's
    images are the VAE decodes of the predicted x0 (differentiable), seen by a local CLIP; with the official loss
    the CLIP source is x0, ``x0_latents`` (VAE-space, one per sample). Returns the input latent; ``self.losses`` and
    ``self.direction`` hold the result; ``on_step`` (a ``Step`` callback) sees every step."""

    WHO = "h-space training"

    def __init__(self, clip: LocalCLIP, vae, text_direction: torch.Tensor, config: TrainConfig, batch_size: int = 1,
                 on_step=None, x0_latents: Optional[torch.Tensor] = None):
        self.clip, self.vae, self.text_direction, self.x0_latents = clip, vae, text_direction, x0_latents
        self.config, self.batch_size, self.on_step = config, max(1, int(batch_size)), on_step
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
        load_for_grad(model_wrap, self.vae)
        net = direction.net.to(x.device).float().train().requires_grad_(True)
        opts = pass_options(base)
        args = {k: v for k, v in extra_args.items() if k != "model_options"}
        text_dir = self.text_direction.to(self.clip.device)

        def call(xx, sigma, which):
            return model_wrap(xx, sigma * xx.new_ones([xx.shape[0]]), model_options=opts[which], **args)

        def pair(xx, sigma):
            with torch.no_grad():
                p_orig = call(xx, sigma, CACHE)
            return p_orig, call(xx, sigma, EDIT)

        def features(p):  # a model-space latent -> unit CLIP image embeddings of its VAE decode
            return self.clip.image_features(decode_01(self.vae, inner, p.float()))

        def clip_loss(p_edit, source):
            if self.config.loss != "official":  # the paper's: the source is P_t^src of the same step
                with torch.no_grad():
                    source = features(source)
            return directional_clip_loss(features(p_edit), source, text_dir)  # official: x0's embedding

        report = reporter(callback, lambda s: (s.denoised, s.denoised))

        def progress(step):
            report(step)
            if self.on_step is not None:
                self.on_step(step)

        starts = list(x.split(self.batch_size))
        sources = None
        if self.config.loss == "official":
            with torch.no_grad():
                sources = [features(inner.process_latent_in(z.to(x.device)))
                           for z in self.x0_latents.split(self.batch_size)]
        try:
            self.losses = train_direction(net.parameters(), pair, lambda xx, s: call(xx, s, ORIG), clip_loss,
                                          starts, sigmas, self.config, progress, sources)
        finally:
            net.eval().requires_grad_(False)  # the shared encoder's cache is this run's (hooks.run_state): gone with it
        self.direction = direction
        return latent_image


@dataclass
class TrainWindow:
    """The trained part of a ``steps``-step ddim_uniform schedule: the SIGMAS from the top down to the last level with
    t ≥ t_edit (``n`` steps), σ(t_edit) where the patch stops, and Δt_train, their mean timestep spacing (what
    Apply's step scaling divides by)."""
    sigmas: torch.Tensor
    n: int
    sigma_lo: float
    train_dt: float


def training_window(model, steps: int, t_edit: int, who: str) -> TrainWindow:
    table = log_sigmas(model, who)
    sigmas = ddim_sigmas(model, steps)
    sigma_lo = t_to_sigma(model, t_edit)
    n = int((sigmas[:-1] >= sigma_lo).sum())
    if n == 0:
        raise ValueError(f"{who}: no step of the {steps}-step schedule has t ≥ t_edit = {t_edit}; lower t_edit.")
    window = sigmas[:n + 1]
    train_dt = (sigma_to_t(table, float(window[0])) - sigma_to_t(table, float(window[-1]))) / n
    return TrainWindow(window, n, sigma_lo, train_dt)


@dataclass
class TrainSettings:
    source_text: str
    target_text: str
    init: str = "inverted"
    steps: int = 40
    t_edit: int = 500
    lambda_clip: float = 0.8
    recon_mult: float = 3.0
    lr: float = 0.003
    epochs: int = 1
    batch_size: int = 1
    seed: int = 0
    loss: str = "paper"            # "paper" (eq. 4/7) or "official" (diffusion_latent.py): optim.hspace
    prompt_templates: bool = True  # ΔT over the official 79 prompt templates (losses.directional)


def train(model, vae, clip: LocalCLIP, clip_name: str, neutral, latent: dict, s: TrainSettings,
          who: str) -> tuple[ImplicitDirection, LiveLoss]:
    """Train f_t on ``latent``'s images (init inverted) or on seeded noise (init random); returns the direction and
    its loss history (pushed live to the node's chart while it runs)."""
    unet = require_unet(model, who)
    samples = checked_latent(model, latent, who)
    win = training_window(model, s.steps, s.t_edit, who)
    if s.init == "inverted" and torch.count_nonzero(samples) == 0:
        raise ValueError(f"{who}: init inverted needs images; connect VAE Encode of training images to latent, "
                         f"or set init to random.")
    with grad_context():
        cos = clip.text_cosine(s.source_text, s.target_text)
        config = TrainConfig(lambda_clip=s.lambda_clip, lambda_recon=s.recon_mult * cos, lr=s.lr, epochs=s.epochs,
                             loss=s.loss)
        templates = IMAGENET_TEMPLATES if s.prompt_templates else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            net = DeltaNet(h_channels(unet))
        meta = {"kind": "implicit", "family": model_family(model.model), "name": f"{s.target_text} (trained)",
                META_KEY: to_meta(fingerprint(model)),
                "train_dt": f"{win.train_dt:.6g}", "num_train_steps": str(s.steps), "t_edit": str(s.t_edit),
                "src_text": s.source_text, "trg_text": s.target_text, "lambda_clip": str(s.lambda_clip),
                "lambda_recon": f"{config.lambda_recon:.6g}", "lr": str(s.lr), "epochs": str(s.epochs),
                "init": s.init, "samples": str(samples.shape[0]), "clip": clip_name, "loss": s.loss,
                "prompt_templates": f"imagenet ({len(IMAGENET_TEMPLATES)})" if templates else "none"}
        direction = ImplicitDirection(net, meta)
        m = model.clone()
        m.set_model_output_block_patch(HSpacePatch(direction, 1.0, math.inf, win.sigma_lo, "asymmetric",
                                                   "both", "resize", log_sigmas(model, who), step_scaling=False))
        with_shared_encoder(m)
        if s.init == "inverted":
            with torch.no_grad():
                starts = run_with_cfg_guider(model, neutral, neutral, 1.0, DDIMInversionSampler(), samples.clone(),
                                             ddim_sigmas(model, s.steps))
            noise = torch.zeros_like(starts)
        else:
            starts, noise = torch.zeros_like(samples), comfy.sample.prepare_noise(samples, s.seed)
        x0 = None
        if s.loss == "official":
            x0 = samples
            if s.init != "inverted":  # the plain DDIM sample of each noise: the official saved random-noise pairs
                with torch.no_grad():
                    x0 = run_with_cfg_guider(model, neutral, neutral, 1.0, comfy.samplers.sampler_object("euler"),
                                             starts, ddim_sigmas(model, s.steps), noise=noise, seed=s.seed)
        live = LiveLoss("h-space training", "-log((2 - L_dir)/2) + L1" if s.loss == "official" else "L_dir + L1")
        text_direction = clip.text_direction(s.source_text, s.target_text, templates)
        total = s.epochs * math.ceil(samples.shape[0] / max(1, s.batch_size)) * win.n
        with private_for_grad(who, m, vae=vae) as private:  # the loop runs on private copies of the U-Net and VAE
            sampler = HSpaceTrainSampler(clip, private.vae, text_direction, config, s.batch_size, live, x0)
            guider = comfy.samplers.CFGGuider(private.model)
            guider.set_conds(private.conds(neutral), private.conds(neutral))
            guider.set_cfg(1.0)
            try:
                guider.sample(noise, starts, sampler, win.sigmas, seed=s.seed,
                              callback=latent_preview.prepare_callback(m, total, {}),
                              disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
            except TrainingError as e:
                raise ValueError(f"{who}: {e}") from None
    trained = sampler.direction
    trained.net.cpu()
    first, last, k = loss_summary(sampler.losses)
    trained.meta.update(loss_first=f"{first:.5g}", loss_last=f"{last:.5g}")
    return trained, live
