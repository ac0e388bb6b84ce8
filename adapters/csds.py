"""EMS / CSDS (``optim.csds``) on ComfyUI objects: the edit prompts encoded to one length, the linear manipulation of
CONDITIONING (tokens and pooled, several attributes), and CSDS as a GUIDER: a CFGGuider whose SAMPLER_SAMPLE wrapper
refines the noised latent z_t at the first sigma before the stock sampler runs (spec ems_csds.md §3).

The refinement runs where ComfyUI has prepared everything (conds processed, latent in model space, the sampler's own
``max_denoise``); the model is called through ``comfy.samplers.calc_cond_batch`` with the guider's model options, so
patches and wrappers apply. The refined z'_t is handed to the sampler as the noise that rebuilds it,
noise' = noise + (z'_t − z_t)/B with B = ∂x/∂noise of the model's ``noise_scaling`` (σ0 for flow models), because a
sampler started without noise would scale a latent by 1 − σ0 on a flow model. Zero iterations change nothing: the
result equals the plain guider's with the same seed, bit for bit.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch

import comfy.patcher_extension
import comfy.samplers
import comfy.utils

from ..optim import csds
from ..samplers.steps import Step
from .checks import is_flow, model_family, require_embedding_files, require_vp_or_flow_model
from .progress import LiveLoss, NodeName, check_interrupt
from .run import private_sampling

WRAPPER_KEY = "ems_csds"
CLIP_TOKENS_KEY = "invedit_clip_tokens"  # where Encode Edit Prompts records the CLIP block's length (SD3)


# ---- Encode: source and target to one length ------------------------------------------------------------------------

def pad_tokens(clip, a: dict, b: dict) -> tuple[dict, dict]:
    """Two prompts' token dicts (``clip.tokenize``) made the same length per encoder: the shorter chunk list gets the
    empty prompt's chunks, a shorter chunk the empty prompt's final (pad) token, so that the encodings match in
    shape and every difference comes from the words."""
    empty = clip.tokenize("")
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for key in set(a) & set(b):
        ca, cb = a[key], b[key]
        blank = empty[key][0] if key in empty and empty[key] else ca[-1]
        while len(ca) < len(cb):
            ca.append(list(blank))
        while len(cb) < len(ca):
            cb.append(list(blank))
        for xa, xb in zip(ca, cb):
            pad = blank[-1]
            while len(xa) < len(xb):
                xa.append(pad)
            while len(xb) < len(xa):
                xb.append(pad)
    return a, b


def encode(clip, tokens: dict, clip_tokens: Optional[int] = None) -> list:
    """CONDITIONING from tokens, as the stock CLIPTextEncode makes it, with the CLIP block's length recorded."""
    out = clip.encode_from_tokens_scheduled(tokens)
    if clip_tokens is not None:
        out = [[t, dict(d, **{CLIP_TOKENS_KEY: clip_tokens})] for t, d in out]
    return out


def clip_block_length(tokens: dict) -> int:
    """Tokens of the CLIP part of an SD3 sequence: 77 per CLIP chunk (the T5 part follows)."""
    chunks = [len(v) for k, v in tokens.items() if k in ("l", "g")]
    return 77 * max(chunks) if chunks else 77


def encode_edit_prompts(clip, source: str, target: str, attribute: str, negative: str, who: str):
    """(c_source, c_target, c_attr, c_negative): source and target padded to one length before encoding."""
    if clip is None:
        raise csds.CSDSError(f"{who}: no CLIP given (a checkpoint without a text encoder?); connect a CLIPLoader.")
    if not source.strip() or not target.strip():
        raise csds.CSDSError(f"{who}: the source and target prompts must not be empty.")
    for name, text in (("source_prompt", source), ("target_prompt", target), ("attribute_prompt", attribute),
                       ("negative_prompt", negative)):
        require_embedding_files(clip, text, who, name)
    ts, tt = pad_tokens(clip, clip.tokenize(source), clip.tokenize(target))
    n = clip_block_length(ts)
    c_s, c_t = encode(clip, ts, n), encode(clip, tt, n)
    c_a = encode(clip, clip.tokenize(attribute if attribute.strip() else target), n)
    c_n = encode(clip, clip.tokenize(negative), n)
    return c_s, c_t, c_a, c_n


# ---- Manipulate: CONDITIONING ----------------------------------------------------------------------------------------

def manipulate(source: list, target: list, alpha: float, edit_tokens: bool = True, edit_pooled: bool = True,
               token_part: str = "all", length_mismatch: str = "zero_pad", base: Optional[list] = None,
               who: str = "EMS Text Manipulate") -> list:
    """c~ = base + α·(target − source) for each entry of the CONDITIONING lists (base = source when not given):
    the token tensor (``edit_tokens``, restricted to ``token_part``) and ``pooled_output`` (``edit_pooled``); the
    other keys come from base. α = 0 returns base's tensors unchanged."""
    base = source if base is None else base
    if not (len(source) == len(target) == len(base)):
        raise csds.CSDSError(f"{who}: the CONDITIONINGs hold {len(source)}, {len(target)} and {len(base)} entries; "
                             f"encode each prompt once (no Conditioning Combine before this node).")
    out = []
    for (s, sd), (t, td), (b, bd) in zip(source, target, base):
        s, t = csds.match_length(s, t, length_mismatch, who)
        b, _ = csds.match_length(b, s, length_mismatch, who)
        if b.shape != s.shape:
            raise csds.CSDSError(f"{who}: accumulate_onto has shape {tuple(b.shape)}, the source {tuple(s.shape)}.")
        mask = csds.token_mask(s.shape[1], token_part, int(sd.get(CLIP_TOKENS_KEY, 77)), s)
        tokens = csds.manipulate(s, t, alpha if edit_tokens else 0.0, base=b, mask=mask)
        d = dict(bd)
        ps, pt, pb = sd.get("pooled_output"), td.get("pooled_output"), bd.get("pooled_output")
        if edit_pooled and ps is not None and pt is not None:
            if ps.shape != pt.shape:
                raise csds.CSDSError(f"{who}: the pooled outputs differ in shape ({tuple(ps.shape)} vs "
                                     f"{tuple(pt.shape)}): encode source and target with the same CLIP.")
            d["pooled_output"] = csds.manipulate(ps, pt, alpha, base=ps if pb is None else pb)
        if not torch.isfinite(tokens).all():
            raise csds.CSDSError(f"{who}: the manipulated conditioning contains NaN/inf.")
        out.append([tokens, d])
    return out


# ---- Sample: the CSDS guider ---------------------------------------------------------------------------------------

def noise_coefficients(model_sampling, sigma: torch.Tensor, like: torch.Tensor, max_denoise: bool):
    """(A, B) of the model's forward noising x = A·latent + B·noise at σ (``noise_scaling`` is affine in both)."""
    zeros, ones = torch.zeros_like(like[:1]), torch.ones_like(like[:1])
    a = model_sampling.noise_scaling(sigma, zeros, ones, max_denoise)
    b = model_sampling.noise_scaling(sigma, ones, zeros, max_denoise)
    return a, b


class CSDSGuider(comfy.samplers.CFGGuider):
    """The edit's guider: cond c~ (``positive``), ``negative`` and the attribute prompt (``attr``) for CSDS; ``cfg``
    for the denoising, ``csds_cfg`` inside CSDS. ``iterations`` 0 is text-only EMS (the plain CFGGuider)."""

    WHO = NodeName("EMS CSDS Guider (InvEdit)")

    def __init__(self, model_patcher, config: csds.CSDSConfig, csds_cfg: float = 1.0, step_space: str = "auto",
                 live: Optional[LiveLoss] = None):
        super().__init__(model_patcher)
        self.config, self.csds_cfg, self.step_space, self.live = config, float(csds_cfg), step_space, live
        self.result: Optional[csds.CSDSResult] = None
        self.z_t = None  # z_t and z'_t (model space) of the last run, for inspection
        self.z_refined = None

    def set_conds(self, positive, negative, attribute=None):
        self.inner_set_conds({"positive": positive, "negative": negative, "attr": attribute or positive})

    def outer_sample(self, *args, **kwargs):
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY,
                                                     self._refine_then_sample, self.model_options,
                                                     is_model_options=True)
        return super().outer_sample(*args, **kwargs)

    def _refine_then_sample(self, executor, guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                            disable_pbar):
        inner = guider.inner_model
        ms = inner.model_sampling
        require_vp_or_flow_model(ms, model_family(inner), self.WHO)
        sampler = executor.class_obj
        max_denoise = bool(sampler.max_denoise(guider, sigmas)) if hasattr(sampler, "max_denoise") else False
        sigma0 = sigmas[0]
        a, b = noise_coefficients(ms, sigma0, noise, max_denoise)
        z_t = ms.noise_scaling(sigma0, noise, latent_image, max_denoise)
        self.z_t = z_t
        if self.config.iterations == 0:
            self.z_refined = z_t
            return executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        s_in = z_t.new_ones([z_t.shape[0]])
        model_options = extra_args["model_options"]
        conds = [guider.conds["positive"], guider.conds["attr"]]
        use_neg = not math.isclose(self.csds_cfg, 1.0)
        if use_neg:
            conds.append(guider.conds.get("negative"))
        # ε̂ = (x − A_x0·x̂0)/B_x0 for the model input x (x = A·x0 + B·ε with max_denoise False: the model's own
        # forward process at σ0, whatever the sampler's start convention)
        coef = [t.float() for t in noise_coefficients(ms, sigma0, noise, False)]

        def predict(z):  # guider.inner_model: the private copy while autograd runs (private_sampling)
            out = comfy.samplers.calc_cond_batch(guider.inner_model, conds, z.to(z_t.dtype), sigma0 * s_in,
                                                 model_options)
            if use_neg:
                out = [out[2] + self.csds_cfg * (o - out[2]) for o in out[:2]]
            return tuple(csds.eps_from_x0(z.float(), o.float(), *coef) for o in out[:2])

        pbar = comfy.utils.ProgressBar(self.config.iterations)

        def on_step(step: Step):
            check_interrupt()
            pbar.update_absolute(step.i + 1, step.total)
            if self.live is not None:
                self.live(step)

        mask = None if denoise_mask is None else denoise_mask.float()
        step = csds.kappa(is_flow(ms), float(sigma0), self.step_space)
        if self.config.mode == "autograd":  # backward through the model: a private copy, outside inference mode
            with private_sampling(guider, self.WHO, model_options=model_options):  # the private model inside
                coef[:] = [t.clone() for t in coef]  # normal tensors: autograd saves them
                self.result = csds.csds_refine(predict, z_t.clone(), self.config, step, mask=mask, on_step=on_step)
        else:
            self.result = csds.csds_refine(predict, z_t, self.config, step, mask=mask, on_step=on_step)
        z_ref = self.result.z.to(z_t.dtype)
        self.z_refined = z_ref
        noise = noise + (z_ref - z_t) / b
        return executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)


def start_index(steps: int, strength: float, mode: str = "diffusers") -> int:
    """Where the edit starts in a ``steps``-step schedule: diffusers' int(steps − strength·steps) (50 at 0.75: 12,
    38 steps denoised), or ComfyUI's denoise convention (the last round(steps·strength) steps)."""
    if not 0.0 < strength <= 1.0:
        raise csds.CSDSError(f"EMS: strength must be in (0, 1], got {strength}")
    if mode == "diffusers":
        return int(steps - strength * steps)
    return steps - max(1, round(steps * strength))
