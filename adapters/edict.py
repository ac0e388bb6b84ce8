"""EDICT (``samplers.edict``) as ComfyUI SAMPLERs, the settings an inversion and its regeneration share, and the pair
LATENT (``adapters.latent``) that carries an inverted pair between nodes."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

import comfy.samplers

from ..samplers import edict
from ..samplers.coords_flow import check_flow_sigmas
from .checks import is_flow, model_family, require_vp_or_flow_model
from .fingerprint import compare
from .latent import EDICT_PAIR_KEY, EDICT_Y_KEY, INVERSION_KEY, InversionInfo, edict_y, to_vae_space
from .progress import NodeName, reporter

log = logging.getLogger(__name__)

EDICT_OUTPUTS = ("x", "y", "mean")


def coordinates(model_sampling) -> edict.Coordinates:
    """EDICT's state coordinates for a model: the flow Euler step on flow-matching (CONST) models, DDIM's VP latents
    on ε/v-prediction ones."""
    return edict.FLOW if is_flow(model_sampling) else edict.VP


FLOW_DEFAULT_SCHEDULER = "simple"  # what ComfyUI's SD3/Flux workflows use; its shift is the model's own


def default_sigmas(model_patcher, steps: int, strength: float = 1.0) -> torch.Tensor:
    """EDICT's default schedule for a model: the reference code's DDIM list (``edict.official_sigmas``) on a VP model;
    on a flow model, which has no DDIM timesteps, ComfyUI's ``simple`` scheduler over the model's own (shifted) σ
    table, of which the last int(steps·strength) steps."""
    ms = model_patcher.get_model_object("model_sampling")
    if is_flow(ms):
        return edict.last_steps(comfy.samplers.calculate_sigmas(ms, FLOW_DEFAULT_SCHEDULER, steps).cpu(), strength)
    return edict.official_sigmas(ms.sigmas.float().cpu(), steps, strength)


def check_schedule(model_sampling, sigmas: torch.Tensor, who: str) -> edict.Coordinates:
    """The SIGMAS checked for EDICT on this model (descending; within [0, 1] for a flow model); its coordinates."""
    edict.check_edict_schedule(sigmas, who)
    coords = coordinates(model_sampling)
    if coords is edict.FLOW:
        check_flow_sigmas(sigmas, who)
    return coords


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


def state_device(device: torch.device, dtype: torch.dtype) -> torch.device:
    """float64 is not available on Apple's MPS: keep the (small) state on the CPU there."""
    return torch.device("cpu") if device.type == "mps" and dtype == torch.float64 else device


@dataclass
class EDICTSetup:
    """What an EDICT run inside a guider works with: the denoiser on the model's device and dtype, the keyword
    arguments of ``edict_sample`` / ``edict_invert`` (settings and the progress callback) and the state's device."""
    denoiser: object
    kwargs: dict
    device: torch.device
    coords: edict.Coordinates


class PairSamplerBase(comfy.samplers.Sampler):
    """What the exactly invertible samplers (EDICT, BDIA) share: the denoiser (``KSamplerX0Inpaint``, so a latent
    noise mask works as in ``KSAMPLER``), the state's coordinates (VP latents, or x itself on a flow model), the start
    from noise, and the state pair of the last run converted to ComfyUI's σ-space. Subclasses set ``WHO``, check
    their options in ``__init__`` and set ``self.dtype``; ``method_kwargs`` gives their math function's settings."""

    WHO = "EDICT"

    def __init__(self, state_dtype: str):
        if state_dtype not in edict.STATE_DTYPES:
            raise ValueError(f"{self.WHO}: state dtype {state_dtype!r} is not supported: use "
                             f"{' or '.join(edict.STATE_DTYPES)} (half precision cannot be inverted).")
        self.dtype = edict.STATE_DTYPES[state_dtype]
        self.pair: tuple[torch.Tensor, torch.Tensor] | None = None  # the state pair of the last run
        self._levels: tuple[torch.Tensor, torch.Tensor] | None = None  # the levels of that pair (see ``result``)
        self.coords: edict.Coordinates = edict.VP  # set by ``setup`` from the model
        self._like: torch.Tensor | None = None  # the LATENT it was run on (device and dtype of results)

    def method_kwargs(self) -> dict:
        return {}

    def setup(self, model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise) -> EDICTSetup:
        inner = model_wrap.inner_model
        require_vp_or_flow_model(inner.model_sampling, model_family(inner), self.WHO)
        self.coords = check_schedule(inner.model_sampling, sigmas, self.WHO)
        if latent_image is None:
            raise ValueError(f"{self.WHO}: no LATENT given.")
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)  # honours a latent noise mask, as KSAMPLER
        model_k.latent_image, model_k.noise = latent_image, noise
        args = dict(extra_args, denoise_mask=denoise_mask)
        dev, model_dtype = latent_image.device, latent_image.dtype
        s_in = latent_image.new_ones([latent_image.shape[0]])

        def denoiser(x, sigma):
            return model_k(x.to(dev), sigma.to(dev) * s_in, **args).to(x.device)

        def preview(step):
            x = self.coords.to_comfy(step.x, step.sigma_next).to(dev, model_dtype)
            return (None if step.denoised is None else step.denoised.to(dev)), x

        kw = dict(self.method_kwargs(), state_dtype=self.dtype, model_dtype=model_dtype,
                  callback=reporter(callback, preview), coords=self.coords)
        return EDICTSetup(denoiser, kw, state_device(dev, self.dtype), self.coords)

    def start_from_noise(self, model_wrap, sigmas, noise, latent_image, device) -> torch.Tensor:
        """The state start of a generation: the noise itself for a full-strength start (the model's top σ, or an
        empty latent), as the reference code does; else ComfyUI's img2img noising (latent + σ·noise; on a flow model
        (1 − σ)·latent + σ·noise)."""
        full = self.max_denoise(model_wrap, sigmas) or torch.count_nonzero(latent_image) == 0
        x = model_wrap.inner_model.model_sampling.noise_scaling(sigmas[0], noise, latent_image, full)
        return self.coords.to_state(x.to(device, self.dtype), sigmas[0].to(device, self.dtype))

    def to_comfy(self, z: torch.Tensor, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A state latent at level σ as ComfyUI σ-space x (z·sqrt(1+σ²) for VP), still in the state dtype, on the
        device of ``like``; refuses NaN/inf."""
        out = self.coords.to_comfy(z, sigma.to(z)).to(like.device)
        if not torch.isfinite(out).all():
            raise ValueError(f"{self.WHO}: the result contains NaN/inf; {self.NAN_HINT}")
        return out

    NAN_HINT = ("check the model (an fp16 overflow?) and the SIGMAS, and keep mix_p near 0.93 (small p makes the "
                "inversion explode).")

    def clean_state(self, run: EDICTSetup, sigmas: torch.Tensor, latent_image, noise, start=None) -> torch.Tensor:
        """An inversion's start: the clean latent (the guider's, or ``start``: the same in model space in the state
        dtype, since the guider's float32 process_latent_in would cost the round trip its last bit) as the state at
        ``edict.end_sigma``; added noise is ignored with a warning."""
        if noise is not None and torch.count_nonzero(noise) > 0:
            log.warning("%s: added noise is ignored (inversion is deterministic).", self.WHO)
        clean = latent_image if start is None else start
        if clean.shape != latent_image.shape:
            raise ValueError(f"{self.WHO}: start latent {tuple(clean.shape)} != LATENT {tuple(latent_image.shape)}.")
        return run.coords.to_state(clean.to(run.device, self.dtype), edict.end_sigma(sigmas).to(self.dtype))

    def keep(self, pair, levels, like: torch.Tensor) -> None:
        """The state pair of a run and the level of each (the same for EDICT's x and y)."""
        self.pair, self._levels, self._like = pair, levels, like

    def result(self, which: str = "x") -> torch.Tensor:
        """x, y or their mean from the last run, in σ-space at the end of its walk, in the state dtype (a node that
        applies ``process_latent_out`` to this in float64 keeps the round trip exact in float32)."""
        zx, zy = self.pair
        if which == "y":
            return self.to_comfy(zy, self._levels[1], self._like)
        z = {"x": zx, "mean": (zx + zy) / 2}[which]
        return self.to_comfy(z, self._levels[0], self._like)


class EDICTBase(PairSamplerBase):
    """EDICT's options on top of the pair samplers' base."""

    WHO = "EDICT"

    def __init__(self, options: EDICTOptions = EDICTOptions()):
        if options.output not in EDICT_OUTPUTS:
            raise ValueError(f"{self.WHO}: output must be one of {EDICT_OUTPUTS}, got {options.output!r}.")
        super().__init__(options.state_dtype)
        edict.check_p(options.p, self.WHO)
        self.options = options

    def method_kwargs(self) -> dict:
        return dict(p=self.options.p, leapfrog=self.options.leapfrog,
                    official_input_scaling=self.options.official_input_scaling)


class EDICTSampler(EDICTBase):
    """EDICT sampling (``samplers.edict``) as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.

    Starts from x = y = the noised latent (``start_from_noise``). With ``pair`` (VP latents at sigmas[0], from
    EDICTInvert) it regenerates that pair instead and ignores the noise. Returns x, y or their mean at the end of
    SIGMAS; ``self.pair`` keeps both afterwards."""

    WHO = NodeName("EDICT Sampler (InvEdit)")

    def __init__(self, options: EDICTOptions = EDICTOptions(), pair=None):
        super().__init__(options)
        self.start_pair = pair

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        run = self.setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        if self.start_pair is not None:
            zx, zy = (z.to(run.device, self.dtype) for z in self.start_pair)
            if zx.shape != latent_image.shape:
                raise ValueError(f"{self.WHO}: the pair has shape {tuple(zx.shape)}, the LATENT "
                                 f"{tuple(latent_image.shape)}.")
        else:
            zx = zy = self.start_from_noise(model_wrap, sigmas, noise, latent_image, run.device)
        zx, zy = edict.edict_sample(run.denoiser, zx, zy, sigmas.to(run.device), **run.kwargs)
        end = edict.end_sigma(sigmas)
        self.keep((zx, zy), (end, end), latent_image)
        return self.result(self.options.output).to(latent_image.dtype)


class EDICTInversionSampler(EDICTBase):
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
        run = self.setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        sig = sigmas.to(run.device)
        z0 = self.clean_state(run, sig, latent_image, noise, self.start)
        zx, zy = edict.edict_invert(run.denoiser, z0, z0, sig, **run.kwargs)
        self.keep((zx, zy), (sig[0], sig[0]), latent_image)
        return self.result("x").to(latent_image.dtype)


# ---- the pair LATENT ------------------------------------------------------------------------------------------------

def pair_latent(model, zx: torch.Tensor, zy: torch.Tensor, sigma: torch.Tensor, info: InversionInfo,
                base: dict | None = None, sigma_y: torch.Tensor | None = None) -> dict:
    """A LATENT carrying a state pair: ``samples`` = x_T at level σ and y in VAE space (EDICT's y_T at σ too; BDIA's
    z_{T−1} at ``sigma_y``, the next level), the exact pair, the inversion settings (on top of ``base``'s other
    keys). EDICT and BDIA share this format, so Latent From Batch, the exactness check and the float32 fallback
    work alike; ``info.method`` says which pair it is."""
    coords = coordinates(model.get_model_object("model_sampling"))
    sigma_y = sigma if sigma_y is None else sigma_y
    x_t, y_t = (to_vae_space(model, coords.to_comfy(z, s.to(z))) for z, s in ((zx, sigma), (zy, sigma_y)))
    if not (torch.isfinite(x_t).all() and torch.isfinite(y_t).all()):
        raise ValueError(f"{info.method.upper()}: the pair contains NaN/inf; check the model (an fp16 overflow?) and "
                         f"the SIGMAS" + (", and keep mix_p near 0.93 (small p makes the inversion explode)."
                                          if info.method == "edict" else "."))
    out = dict(base or {})
    out.update({"samples": x_t, EDICT_Y_KEY: y_t, INVERSION_KEY: info.to_dict(),
                EDICT_PAIR_KEY: {"x": zx.detach().cpu(), "y": zy.detach().cpu(), "samples": x_t}})
    return out


def _follow_batch(latent: dict, *tensors):
    """The tensors sliced like the LATENT's samples when a batch node (Latent From Batch, which records
    ``batch_index``) took images out of a pair's batch; unchanged when the batch sizes agree."""
    n, idx = latent["samples"].shape[0], latent.get("batch_index")
    if tensors[0].shape[0] == n:
        return tensors
    if idx is None or len(idx) != n or max(idx) >= tensors[0].shape[0]:
        raise ValueError(f"EDICT: the pair holds {tensors[0].shape[0]} images but the LATENT {n}, and no batch_index "
                         f"says which: take images out of the pair with Latent From Batch only, or invert the images "
                         f"you want to regenerate.")
    return tuple(t[list(idx)] for t in tensors)


def exact_pair(latent: dict):
    """The exact (x_T, y_T) state pair of an EDICT pair LATENT whose samples were not changed since (following a Latent
    From Batch selection); else None."""
    exact = latent.get(EDICT_PAIR_KEY)
    if exact is None:
        return None
    x, y, samples = _follow_batch(latent, exact["x"], exact["y"], exact["samples"])
    if samples.shape == latent["samples"].shape and torch.equal(samples, latent["samples"]):
        return x, y
    return None


def start_pair(model, latent: dict, sigma: torch.Tensor, who: str, sigma_y: torch.Tensor | None = None):
    """The state pair to regenerate: the exact one, or (with a warning) the LATENT's float32 values when its samples
    were changed after inversion (x at σ, y at ``sigma_y``, by default σ too)."""
    pair = exact_pair(latent)
    if pair is not None:
        return pair
    y = edict_y(latent)
    if y is None:
        raise ValueError(f"{who}: the LATENT has no second latent of the pair ('{EDICT_Y_KEY}'); connect the "
                         f"Invert node's output.")
    (y,) = _follow_batch(latent, y)
    log.warning("%s: the pair's samples were changed after inversion; regenerating from the LATENT's float32 values "
                "(exactness ~1e-6 instead of float precision).", who)
    coords = coordinates(model.get_model_object("model_sampling"))
    sigma_y = sigma if sigma_y is None else sigma_y
    return tuple(coords.to_state(model.model.process_latent_in(v.to(torch.float64)), s.to(torch.float64))
                 for v, s in ((latent["samples"], sigma), (y, sigma_y)))


def check_edict_pair(info: InversionInfo | None, model_patcher, sigmas: torch.Tensor | None, options,
                     who: str, method: str = "edict") -> torch.Tensor:
    """Refuse a regeneration whose settings differ from the inversion's (``method``: "edict" or "bdia", whose
    ``options.exactness_settings()`` name what must agree); returns the SIGMAS to use."""
    name = method.upper()
    fix = f"Connect the LATENT from {name} Invert and give both nodes the same settings."
    if info is None or info.method != method:
        other = f" (it is a{'n' if (info and info.method[:1] in 'aeiou') else ''} {info.method} inversion)" \
            if info is not None and info.method not in ("unknown", method) else ""
        article = "an" if name[0] in "AEIOU" else "a"
        raise ValueError(f"{who}: this LATENT is not {article} {name} inversion"
                         f"{other or f' (it has no {name} pair)'}. {fix}")
    family = model_family(model_patcher.model)
    if info.model_family != family:
        raise ValueError(f"{who}: the pair was inverted with a {info.model_family} model, this is {family}. {fix}")
    compare(info.model_fingerprint if isinstance(info.model_fingerprint, dict) else None, model_patcher, who,
            "the pair", f"{name} Invert")
    for key, have in options.exactness_settings().items():
        if getattr(info, key) != have:
            raise ValueError(f"{who}: the pair was inverted with {key} = {getattr(info, key)}, this node has {have}; "
                             f"exact regeneration needs the same value. {fix}")
    stored = torch.tensor(info.sigmas, dtype=torch.float64)
    if sigmas is None:
        return stored.float()
    if sigmas.numel() != stored.numel() or not torch.allclose(sigmas.double().cpu(), stored, rtol=1e-6, atol=0):
        raise ValueError(f"{who}: the SIGMAS differ from the inversion's ({stored.numel() - 1} steps from "
                         f"{stored[0]:.4f} to {stored[-1]:.4f} there, {sigmas.numel() - 1} steps from "
                         f"{float(sigmas[0]):.4f} to {float(sigmas[-1]):.4f} here). Use the same {name} Sigmas "
                         f"(steps, schedule, strength), or leave the sigmas input unconnected to use the pair's.")
    return sigmas
