"""Thin adapters from the pure sampling math to ComfyUI's ``comfy.samplers.Sampler`` interface.

Imported only inside a ComfyUI host (``comfy`` is imported here at module level, unlike the math modules).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

import comfy.k_diffusion.sampling as kds
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers

from ..hooks.hspace import PASS_KEY, HSpacePatch
from ..hooks.unet_split import CACHE_PASS, SharedEncoder
from . import asyrp, ddim, edict
from .coords import vp_scale

log = logging.getLogger(__name__)

INVERSION_KEY = "invedit_inversion"  # metadata stored in the LATENT dict of an inverted latent


def model_family(base_model) -> str:
    """The model-config class name ComfyUI detected for a BaseModel (``SD15``, ``SDXL``, ``SD3``, ``Flux``, …)."""
    return type(base_model.model_config).__name__


def require_vp_model(model_sampling, family: str, who: str) -> None:
    """Refuse flow-matching models, whose coordinates (x = (1−σ)x0 + σε) the DDIM formulas do not cover."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        raise ValueError(f"{who}: this is a flow-matching model ({family} sampled with "
                         f"{type(model_sampling).__name__}, as SD3/Flux or a ModelSamplingSD3/Flux patch make it); "
                         f"DDIM inversion supports ε- and v-prediction models (SD1.x, SD2.x, SDXL) only for now. "
                         f"Use an SD1.5/SDXL checkpoint without a flow sampling patch.")


def require_latent_channels(latent: torch.Tensor, model_patcher, who: str) -> None:
    want = model_patcher.model.latent_format.latent_channels
    if latent.ndim != 4 or latent.shape[1] != want:
        raise ValueError(f"{who}: the LATENT has shape {tuple(latent.shape)} but {model_family(model_patcher.model)} "
                         f"works on [B, {want}, H, W] latents. Encode the image with this model's VAE.")


class DDIMInversionSampler(comfy.samplers.Sampler):
    """DDIM inversion (see ``samplers.ddim``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from the clean latent the guider passes in (ComfyUI has already applied ``process_latent_in``), walks the
    SIGMAS from the lowest level to the highest and returns the noise latent; the guider applies
    ``process_latent_out``, so the output is a LATENT in VAE space that the stock samplers, with added noise off and
    the same SIGMAS, denoise back. Added noise is ignored: inversion is deterministic.
    """

    WHO = "DDIM inversion sampler"

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        ddim.check_sigmas(sigmas, self.WHO)
        if latent_image is None:
            raise ValueError(f"{self.WHO}: no LATENT to invert.")
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.warning("%s: the NOISE input is ignored (inversion is deterministic); connect DisableNoise or set "
                        "add_noise off to silence this.", self.WHO)
        s_in = latent_image.new_ones([latent_image.shape[0]])
        total = sigmas.numel() - 1

        def denoiser(x, sigma):
            return model_wrap(x, sigma * s_in, **extra_args)

        def on_step(i, x, denoised, sigma, sigma_next):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(i, denoised, x, total)

        x = ddim.ddim_invert(denoiser, latent_image, sigmas, on_step)
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.WHO}: the inversion produced NaN/inf values; check the model and SIGMAS "
                             f"(the lowest sigma must be >= 0, the model must not output NaN).")
        return x


def inversion_metadata(model_patcher, sigmas: torch.Tensor, cfg: float, shape, method: str = "ddim",
                       **settings) -> dict:
    """What a later node needs to check that a regeneration matches the inversion settings."""
    return {"method": method, "model_family": model_family(model_patcher.model),
            "sigmas": [float(s) for s in sigmas.flatten()], "cfg": float(cfg), "latent_shape": list(shape),
            **settings}


# ---- EDICT ----------------------------------------------------------------------------------------------------------

EDICT_Y_KEY = "edict_y"               # LATENT key: the inverted y_T, in VAE space like "samples" (x_T)
EDICT_PAIR_KEY = "invedit_edict_pair"  # LATENT key: the exact pair in the state dtype (see EDICTInvert)
EDICT_OUTPUTS = ("x", "y", "mean")


@dataclass(frozen=True)
class EDICTOptions:
    """The settings that must be equal for an inversion and its regeneration (and the sampler's output choice)."""
    p: float = edict.DEFAULT_P
    leapfrog: bool = True
    official_input_scaling: bool = True
    state_dtype: str = "float64"
    output: str = "x"

    def exactness_settings(self) -> dict:
        """What an inversion and its regeneration must share (the state dtype may differ: float32 regenerates a
        float64 pair to ~1e-6)."""
        return {k: v for k, v in asdict(self).items() if k not in ("output", "state_dtype")}


def _state_device(device: torch.device, dtype: torch.dtype) -> torch.device:
    """float64 is not available on Apple's MPS: keep the (small) state on the CPU there."""
    return torch.device("cpu") if device.type == "mps" and dtype == torch.float64 else device


class _EDICTBase(comfy.samplers.Sampler):
    WHO = "EDICT"

    def __init__(self, options: EDICTOptions = EDICTOptions()):
        if options.output not in EDICT_OUTPUTS:
            raise ValueError(f"{self.WHO}: output must be one of {EDICT_OUTPUTS}, got {options.output!r}.")
        if options.state_dtype not in edict.STATE_DTYPES:
            raise ValueError(f"{self.WHO}: state dtype {options.state_dtype!r} is not supported: use "
                             f"{' or '.join(edict.STATE_DTYPES)} (half precision cannot be inverted).")
        edict.check_p(options.p, self.WHO)
        self.options = options
        self.dtype = edict.STATE_DTYPES[options.state_dtype]
        self.pair: tuple[torch.Tensor, torch.Tensor] | None = None  # the (x, y) VP pair of the last run
        self._end: torch.Tensor | None = None  # the level of that pair (see ``result``)
        self._like: torch.Tensor | None = None  # the LATENT it was run on (device and dtype of results)

    def _setup(self, model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise):
        inner = model_wrap.inner_model
        require_vp_model(inner.model_sampling, model_family(inner), self.WHO)
        edict.check_sigmas(sigmas, self.WHO)
        if latent_image is None:
            raise ValueError(f"{self.WHO}: no LATENT given.")
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)  # honours a latent noise mask, as KSAMPLER
        model_k.latent_image, model_k.noise = latent_image, noise
        args = dict(extra_args, denoise_mask=denoise_mask)
        dev, model_dtype = latent_image.device, latent_image.dtype
        s_in = latent_image.new_ones([latent_image.shape[0]])
        total = sigmas.numel() - 1

        def denoiser(x, sigma):
            return model_k(x.to(dev), sigma.to(dev) * s_in, **args).to(x.device)

        def on_step(i, zx, zy, denoised, sigma, sigma_next):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                x = (zx * vp_scale(sigma_next)).to(dev, model_dtype)
                callback(i, x if denoised is None else denoised.to(dev), x, total)

        kw = dict(p=self.options.p, leapfrog=self.options.leapfrog,
                  official_input_scaling=self.options.official_input_scaling, state_dtype=self.dtype,
                  model_dtype=model_dtype, callback=on_step)
        return denoiser, kw, _state_device(dev, self.dtype)

    def to_comfy(self, z: torch.Tensor, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A VP state latent at level σ as ComfyUI σ-space x = z·sqrt(1+σ²), still in the state dtype, on the device
        of ``like``; refuses NaN/inf."""
        out = (z * vp_scale(sigma.to(z))).to(like.device)
        if not torch.isfinite(out).all():
            raise ValueError(f"{self.WHO}: the result contains NaN/inf; check the model (an fp16 overflow?) and the "
                             f"SIGMAS, and keep mix_p near 0.93 (small p makes the inversion explode).")
        return out

    def result(self, which: str = "x") -> torch.Tensor:
        """x, y or their mean from the last run, in σ-space at the end of its walk, in the state dtype (a node that
        applies ``process_latent_out`` to this in float64 keeps the round trip exact in float32)."""
        zx, zy = self.pair
        return self.to_comfy({"x": zx, "y": zy, "mean": (zx + zy) / 2}[which], self._end, self._like)


class EDICTSampler(_EDICTBase):
    """EDICT sampling (``samplers.edict``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from x = y = the noised latent: for a full-strength start (the model's top σ, or an empty latent) the VP
    latent is the noise itself, as the reference code does; otherwise ComfyUI's img2img noising x = latent + σ·noise.
    With ``pair`` (VP latents at sigmas[0], from EDICTInvert) it regenerates that pair instead and ignores the noise.
    Returns x, y or their mean at the end of SIGMAS; ``self.pair`` keeps both afterwards."""

    WHO = "EDICT sampler"

    def __init__(self, options: EDICTOptions = EDICTOptions(), pair=None):
        super().__init__(options)
        self.start_pair = pair

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        denoiser, kw, sdev = self._setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        if self.start_pair is not None:
            zx, zy = (z.to(sdev, self.dtype) for z in self.start_pair)
            if zx.shape != latent_image.shape:
                raise ValueError(f"{self.WHO}: the pair has shape {tuple(zx.shape)}, the LATENT "
                                 f"{tuple(latent_image.shape)}.")
        else:
            full = self.max_denoise(model_wrap, sigmas) or torch.count_nonzero(latent_image) == 0
            x = model_wrap.inner_model.model_sampling.noise_scaling(sigmas[0], noise, latent_image, full)
            zx = zy = x.to(sdev, self.dtype) / vp_scale(sigmas[0].to(sdev, self.dtype))
        zx, zy = edict.edict_sample(denoiser, zx, zy, sigmas.to(sdev), **kw)
        self.pair, self._end, self._like = (zx, zy), edict.end_sigma(sigmas), latent_image
        return self.result(self.options.output).to(latent_image.dtype)


class EDICTInversionSampler(_EDICTBase):
    """EDICT inversion: the clean latent becomes x_0 = y_0 and is walked back up the descending SIGMAS; returns x_T
    (σ-space at sigmas[0]); ``self.pair`` keeps the exact (x_T, y_T) VP pair. The clean latent is the one the guider
    passes in, or ``start`` (the same in model space, in the state dtype: the guider's float32 process_latent_in
    would cost the round trip its last bit)."""

    WHO = "EDICT inversion"

    def __init__(self, options: EDICTOptions = EDICTOptions(), start=None):
        super().__init__(options)
        self.start = start

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        denoiser, kw, sdev = self._setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.warning("%s: added noise is ignored (inversion is deterministic).", self.WHO)
        sig = sigmas.to(sdev)
        clean = latent_image if self.start is None else self.start
        if clean.shape != latent_image.shape:
            raise ValueError(f"{self.WHO}: start latent {tuple(clean.shape)} != LATENT {tuple(latent_image.shape)}.")
        z0 = clean.to(sdev, self.dtype) / vp_scale(edict.end_sigma(sig).to(self.dtype))
        zx, zy = edict.edict_invert(denoiser, z0, z0, sig, **kw)
        self.pair, self._end, self._like = (zx, zy), sig[0], latent_image
        return self.result("x").to(latent_image.dtype)


def vp_from_vae_space(model_patcher, latent: torch.Tensor, sigma: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A VAE-space LATENT tensor at level σ as the VP state latent z = process_latent_in(latent)/sqrt(1+σ²), computed
    in ``dtype`` (the inverse of ``process_latent_out`` of ``_EDICTBase.result``)."""
    return model_patcher.model.process_latent_in(latent.to(dtype)) / vp_scale(sigma.to(dtype))


def check_edict_pair(meta: dict | None, model_patcher, sigmas: torch.Tensor | None, options: EDICTOptions,
                     who: str) -> torch.Tensor:
    """Refuse a regeneration whose settings differ from the inversion's; returns the SIGMAS to use."""
    fix = "Connect the LATENT from EDICT Invert and give both nodes the same settings."
    if not meta or meta.get("method") != "edict":
        raise ValueError(f"{who}: this LATENT is not an EDICT inversion (it has no EDICT pair). {fix}")
    family = model_family(model_patcher.model)
    if meta["model_family"] != family:
        raise ValueError(f"{who}: the pair was inverted with a {meta['model_family']} model, this is {family}. {fix}")
    for key, have in options.exactness_settings().items():
        if meta[key] != have:
            raise ValueError(f"{who}: the pair was inverted with {key} = {meta[key]}, this node has {have}; "
                             f"exact regeneration needs the same value. {fix}")
    stored = torch.tensor(meta["sigmas"], dtype=torch.float64)
    if sigmas is None:
        return stored.float()
    if sigmas.numel() != stored.numel() or not torch.allclose(sigmas.double().cpu(), stored, rtol=1e-6, atol=0):
        raise ValueError(f"{who}: the SIGMAS differ from the inversion's ({stored.numel() - 1} steps from "
                         f"{stored[0]:.4f} to {stored[-1]:.4f} there, {sigmas.numel() - 1} steps from "
                         f"{float(sigmas[0]):.4f} to {float(sigmas[-1]):.4f} here). Use the same EDICT Sigmas "
                         f"(steps, schedule, strength), or leave the sigmas input unconnected to use the pair's.")
    return sigmas


# ---- Asyrp (h-space) ------------------------------------------------------------------------------------------------

def hspace_patches(model_options: dict) -> list:
    """The h-space patches (hooks.hspace.HSpacePatch) a model carries."""
    patches = model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch", [])
    return [p for p in patches if isinstance(p, HSpacePatch)]


def shared_encoders(model_options: dict) -> list:
    """The SharedEncoder wrappers (hooks.unet_split) a model carries."""
    return [w for w in comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                                 model_options, is_model_options=True)
            if isinstance(w, SharedEncoder)]


def pass_options(model_options: dict) -> dict:
    """Copies of ``model_options`` marking the U-Net call as the unshifted pass ("orig"), the unshifted pass whose
    encoder state the shifted one reuses (``CACHE_PASS``) or the shifted pass ("edit"); see hooks.hspace/unet_split."""
    opts = {}
    for which in ("orig", CACHE_PASS, "edit"):
        opts[which] = comfy.model_patcher.create_model_options_clone(model_options)
        opts[which].setdefault("transformer_options", {})[PASS_KEY] = which
    return opts


class AsyrpSampler(comfy.samplers.Sampler):
    """The Asyrp process (``samplers.asyrp``) as a SAMPLER: inside any asymmetric h-space window two predictions per
    step (the model with the shift, P_edit, and without, P_orig), plain DDIM after it, DDIM η = 1 below t_boost.
    Without an h-space patch it is deterministic DDIM (bit-identical to the stock ``euler``) until t_boost.

    With ``shared_encoder`` (default) and a model patched by h-space Apply, the unshifted pass keeps the U-Net's
    encoder state and the shifted pass runs only the decoder (hooks.unet_split); otherwise two full passes."""

    WHO = "Asyrp sampler"

    def __init__(self, t_boost: int = 0, eta_boost: float = 1.0, shared_encoder: bool = True):
        self.t_boost, self.eta_boost, self.shared_encoder = int(t_boost), float(eta_boost), bool(shared_encoder)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        ms = inner.model_sampling
        require_vp_model(ms, model_family(inner), self.WHO)
        if denoise_mask is not None:
            raise ValueError(f"{self.WHO}: latent noise masks (inpainting) are not supported; remove the mask or use "
                             f"the symmetric mode with a stock sampler.")
        x = ms.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        s_in = x.new_ones([x.shape[0]])
        base = extra_args["model_options"]
        patches = hspace_patches(base)
        caches = shared_encoders(base) if self.shared_encoder else []
        opts = pass_options(base)
        args = {k: v for k, v in extra_args.items() if k != "model_options"}
        sigma_boost = float(ms.sigma(torch.tensor(self.t_boost))) if self.t_boost > 0 else 0.0
        total = sigmas.numel() - 1

        def edit_at(sigma: float) -> bool:
            return any(p.mode == "asymmetric" and p.active(sigma) for p in patches)

        def denoise(xx, sigma, edit):
            if not edit:
                return model_wrap(xx, sigma * s_in, model_options=opts["orig"], **args), None
            for c in caches:
                c.clear()
            first = CACHE_PASS if caches else "orig"
            p_orig = model_wrap(xx, sigma * s_in, model_options=opts[first], **args)
            return p_orig, model_wrap(xx, sigma * s_in, model_options=opts["edit"], **args)

        def on_step(i, xx, denoised, sigma, sigma_next):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(i, denoised, xx, total)

        noise_sampler = kds.default_noise_sampler(x, seed=extra_args.get("seed"))
        try:
            out = asyrp.asyrp_sample(denoise, x, sigmas, edit_at, sigma_boost, self.eta_boost, noise_sampler, on_step)
        finally:
            for c in caches:
                c.clear()
        return ms.inverse_noise_scaling(sigmas[-1], out)
