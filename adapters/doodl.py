"""DOODL (``optim.doodl``) on a ComfyUI model: the optimiser runs as an EDICT ``Sampler`` through a stock CFGGuider
(ComfyUI loads the model, prepares the conditioning and applies every patch); and the one-step guidance baseline as a
SAMPLER (the official code's: the gradient through the unconditional prediction, fac·x̂0 + (1 − fac)·z decoded)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..losses.pixel import per_image
from ..optim.doodl import (ChainSpec, DOODLConfig, doodl_optimize, one_step_guidance_sample, pair_drifted,
                           pair_loss_gradients)
from ..samplers import edict
from ..samplers.steps import Step
from .checks import checked_latent, model_family, require_vp_model
from .edict import EDICTBase, EDICTOptions, check_edict_pair, default_sigmas, exact_pair, pair_latent
from .latent import InversionInfo, to_vae_space
from .progress import LiveLoss, NodeName, check_interrupt, reporter
from .run import (block_checkpointing, decode_01, load_for_grad, private_for_grad, private_sampling,
                  require_checkpointable, vae_decoder)


class DOODLSampler(EDICTBase):
    """DOODL (``optim.doodl.doodl_optimize``) as a Sampler run through a guider: optimises the EDICT start pair so
    that the decoded end of the chain lowers ``loss`` (a pixel loss from ``losses.pixel``). Starts from the noise
    (generation: x_T = y_T, tied and renormalised) or from ``pair`` (VP latents at sigmas[0] from EDICT Invert:
    untied, not renormalised, as ``config`` says). Returns the chosen iterate's x_0; ``self.result_pair`` holds the
    optimised (x_T, y_T), ``self.losses`` the loss of every evaluated iterate, ``self.gaps`` ‖x_0 − y_0‖/‖x_0‖. Each
    iteration shows the current x_0 as the preview and goes to ``on_iteration`` (a ``Step`` callback); interrupt is
    checked at every model step."""

    WHO = "DOODL"

    def __init__(self, vae, loss, config: DOODLConfig, options: EDICTOptions = EDICTOptions(), mode: str = "reversible",
                 pair=None, seed: int = 0, on_iteration=None, checkpointing: bool = False):
        super().__init__(options)
        self.checkpointing = checkpointing
        self.vae, self.loss, self.config, self.mode, self.start_pair = vae, loss, config, mode, pair
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)  # the loss's crops (drawn once for the batch)
        self.on_iteration = on_iteration
        self.losses: list[float] = []
        self.gaps: list[float] = []
        self.result_pair = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        run = self.setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, None, noise)
        inner = model_wrap.inner_model
        load_for_grad(model_wrap, self.vae)
        if self.start_pair is not None:
            zx, zy = (z.to(run.device, self.dtype) for z in self.start_pair)
        else:
            zx = zy = self.start_from_noise(model_wrap, sigmas, noise, latent_image, run.device)
        end = edict.end_sigma(sigmas).to(run.device, self.dtype)
        dev, mdtype = latent_image.device, latent_image.dtype

        def model_space(z):
            return self.coords.to_comfy(z, end).to(dev, mdtype)

        def decode_loss(z):  # each image's own loss (clamped to [0, 1] as official)
            return per_image(self.loss, decode_01(self.vae, inner, model_space(z)).clamp(0, 1), self.generator)

        preview = reporter(callback)

        def on_iteration(step):
            check_interrupt()
            self.losses.append(step.loss)
            self.gaps.append(float((step.x - step.y).norm() / step.x.norm().clamp(min=1e-12)))
            x0 = model_space(step.x)
            preview(Step(step.i, step.total + 1, x0, x0))  # iterations 0 … total: total + 1 previews
            if self.on_iteration is not None:
                self.on_iteration(step)

        spec = ChainSpec(run.denoiser, sigmas.to(run.device), self.options.p, self.options.leapfrog,
                         self.options.official_input_scaling, self.dtype, mdtype, self.mode, reporter(), run.coords)
        if self.checkpointing:
            require_checkpointable(inner.diffusion_model, model_family(inner), self.WHO)
        with block_checkpointing(inner.diffusion_model, vae_decoder(self.vae), enabled=self.checkpointing):
            # ξ: one generator per image, so an image of a batch is perturbed as it is alone
            perturb = [torch.Generator().manual_seed(self.seed + 1 + i) for i in range(zx.shape[0])]
            res = doodl_optimize(spec, pair_loss_gradients(decode_loss), zx, zy, self.config, perturb, on_iteration)
        self.result_pair = (res.x, res.y)
        self.keep((res.x0, res.y0), (end, end), latent_image)
        return self.result("x").to(latent_image.dtype)


@dataclass
class DOODLSettings:
    seed: int = 0
    steps: int = 50
    cfg: float = 7.5
    mix_p: float = edict.DEFAULT_P
    config: DOODLConfig = field(default_factory=DOODLConfig)
    backprop: str = "reversible"
    pair_steps: str = "shared"
    checkpointing: bool = False  # the U-Net's and the VAE decoder's blocks recomputed in the backward passes


@dataclass
class DOODLRun:
    latent: dict       # x_0 of the chosen iterate
    pair: dict         # the optimised (x_T, y_T) as an EDICT pair LATENT
    losses: list
    gaps: list
    live: LiveLoss
    best: bool = False  # keep="best": the summary names the best iterate

    def summary(self) -> str:
        losses, gaps = self.losses, self.gaps
        text = (f"DOODL: {len(losses) - 1} iterations, loss {losses[0]:.4f} → {losses[-1]:.4f}"
                + (f" (best {min(losses):.4f} at {losses.index(min(losses))})" if self.best else "")
                + f"; x_0/y_0 gap {gaps[0]:.3f} → {gaps[-1]:.3f}")
        if pair_drifted(gaps):
            text += (" — x_0 and y_0 have drifted apart: the steps exploited the x/y coupling (the loss averages both "
                     "ends); lower grad_clip or lr")
        return text


def optimize(model, positive, negative, vae, loss, latent: dict, s: DOODLSettings, who: str) -> DOODLRun:
    """Generation from an empty latent and a seed (``default_sigmas`` of ``s.steps`` steps: the official 980…0 list,
    or ``simple`` on a flow model), or editing an unchanged EDICT Invert pair (its own sigmas, p and leapfrog,
    checked)."""
    samples = checked_latent(model, latent, who, flow=True)
    info = InversionInfo.from_latent(latent)
    # an EDICT pair brings its own leapfrog and input scaling (this node has no inputs for them)
    leapfrog, scaling = ((info.leapfrog, info.official_input_scaling) if info is not None and info.method == "edict"
                         else (True, True))
    options = EDICTOptions(s.mix_p, leapfrog, scaling, "float64")
    pair = None
    if info is not None:
        sigmas = check_edict_pair(info, model, None, options, who)
        pair = exact_pair(latent)
        if pair is None:
            raise ValueError(f"{who}: this LATENT is not an unchanged EDICT Invert output; connect EDICT Invert "
                             f"directly (DOODL needs the exact pair).")
    else:
        sigmas = default_sigmas(model, s.steps)
    config = dataclasses.replace(s.config, tie=pair is None, renormalize=pair is None,
                                 shared_step=pair is not None and s.pair_steps == "shared")
    live = LiveLoss("DOODL", "loss", inclusive=True)
    noise = comfy.sample.prepare_noise(samples, s.seed) if pair is None else torch.zeros_like(samples)
    callback = latent_preview.prepare_callback(model, config.iterations + 1, {})
    with private_for_grad(who, model, vae=vae) as private:  # the loop runs on private copies of the U-Net and VAE
        sampler = DOODLSampler(private.vae, loss, config, options, s.backprop, pair, s.seed, live, s.checkpointing)
        guider = comfy.samplers.CFGGuider(private.model)
        guider.set_conds(private.conds(positive), private.conds(negative))
        guider.set_cfg(s.cfg)
        start = samples.clone() if pair is None else torch.zeros_like(samples)
        guider.sample(noise.clone(), start, sampler, sigmas.float(), callback=callback,
                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=s.seed)
    out = {"samples": to_vae_space(model, sampler.result("x"))}
    info = InversionInfo.of(model, sigmas, s.cfg, samples.shape, method="edict", state_dtype="float64",
                            **options.exactness_settings())
    zx, zy = sampler.result_pair
    return DOODLRun(out, pair_latent(model, zx, zy, sigmas[0], info), sampler.losses, sampler.gaps, live,
                    best=config.keep == "best")


class OneStepGuidanceSampler(comfy.samplers.Sampler):
    """The DOODL paper's baseline (``optim.doodl.one_step_guidance_sample``, the official code's one-step classifier
    guidance) as a SAMPLER: DDIM whose step is pushed down the gradient of a pixel loss at every step. The gradient
    goes through the guider's *negative* (unconditional) prediction only, evaluated once more with gradients
    (``calc_cond_batch``, the uncond rows), and the decoded latent is fac·x̂0_u + (1 − fac)·z, fac = sqrt(1 − ᾱ); the
    step itself uses the guider's CFG-combined prediction. A guider without a negative (BasicGuider) differentiates
    its one prediction. Per step: the guided call, one uncond call with gradients, one VAE decode, one loss backward."""

    WHO = NodeName("One-Step Guidance Sampler (InvEdit)")

    def __init__(self, vae, loss, scale: float, seed: int = 0):
        self.vae, self.loss, self.scale, self.seed = vae, loss, float(scale), int(seed)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        if denoise_mask is not None:
            raise ValueError(f"{self.WHO}: latent noise masks are not supported.")
        generator = torch.Generator().manual_seed(self.seed)
        negative = getattr(model_wrap, "conds", {}).get("negative")
        # the guider's U-Net and the VAE as private copies while the loop runs (the guider is the stock node's)
        with private_sampling(model_wrap, self.WHO, vae=self.vae,
                              model_options=extra_args.get("model_options")) as private:
            net, vae = model_wrap.inner_model, private.vae  # the private BaseModel
            args = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in extra_args.items()}
            x = net.model_sampling.noise_scaling(sigmas[0], noise.clone(), latent_image.clone(),
                                                   self.max_denoise(model_wrap, sigmas))
            s_in = x.new_ones([x.shape[0]])

            def denoiser(xx, sigma):
                return model_wrap(xx, sigma * s_in, **args)

            def uncond(xx, sigma):  # index 1: the rows are marked uncond for the model's patches
                return comfy.samplers.calc_cond_batch(net, [None, negative], xx, sigma * s_in,
                                                      args.get("model_options", {}))[1]

            def loss_of_latent(z):
                return self.loss(decode_01(vae, net, z).clamp(0, 1), generator)

            out = one_step_guidance_sample(denoiser, loss_of_latent, x, sigmas.clone(), self.scale,
                                           reporter(callback), None if negative is None else uncond)
        return inner.model_sampling.inverse_noise_scaling(sigmas[-1], out.detach())
