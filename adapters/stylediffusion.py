"""StyleDiffusion value inversion, null-text inversion and prompt-to-prompt / P2Plus editing on ComfyUI models
(``optim.stylediffusion``, ``hooks.attention``).

Both inversions and the edit run as ``comfy.samplers.Sampler``s through a stock CFGGuider (ComfyUI loads the model,
prepares the conditionings and applies every patch, the pattern of ``comfy_extras/nodes_train.py``):

- ``ValueInversionSampler`` calls the cond and the uncond branch separately (``calc_cond_batch``), because the loop
  differentiates through one and not the other: DDIM inversion at guidance 1 with the cross-attention maps recorded,
  then the per-step optimisation along the pivots.
- ``P2PSampler`` is DDIM (η = 0, ComfyUI's ``euler`` step) on a batch of rows [source, target] with LocalBlend
  between steps. It is not a GUIDER: LocalBlend changes the latents between steps, which a guider cannot, and the
  rows' token maps are made from the prompts by the Edit node. The attention edits are MODEL patches
  (``install``), so any guider's model calls see them.

Attention patches go on every transformer block (``attention_blocks``); layers no controller wants run ComfyUI's
fused attention (``comfy.ldm.modules.attention.optimized_attention``), bit for bit as unpatched.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.samplers
from comfy.ldm.modules.attention import SpatialTransformer

from ..artifacts.stylediffusion import tensor_hash
from ..errors import quote
from ..hooks import attention as A
from ..optim import stylediffusion as sd
from ..samplers.coords import vp_scale
from ..samplers.steps import Step
from .checks import (context_width, model_family, require_conditioning_width, require_embedding_files, require_unet,
                     require_vp_model)
from .fingerprint import META_KEY, compare, fingerprint, from_meta, to_meta
from .progress import reporter
from .run import block_checkpointing, private_for_grad

LENGTH = sd.CHUNK  # tokens of one CLIP chunk: the mapper's A, B and P2P's token maps


def fused(q, k, v, heads, **kw):
    """ComfyUI's attention as selected at start-up (looked up at call time)."""
    return comfy_attention.optimized_attention(q, k, v, heads, **kw)


def attention_blocks(unet) -> list[tuple[str, int]]:
    """(block name, number) of every U-Net block holding a transformer (the keys of attn replace patches)."""
    out = []
    for name, blocks in (("input", unet.input_blocks), ("middle", [unet.middle_block]), ("output", unet.output_blocks)):
        for number, block in enumerate(blocks):
            if any(isinstance(m, SpatialTransformer) for m in block.modules()):
                out.append((name, number))
    return out


def attention_divisors(unet) -> list[int]:
    """The query-grid divisors (latent side / layer side) of the U-Net's transformer blocks, from its down-sampling
    stages (input blocks after k Downsamples: 2^k; the middle block: the deepest; output blocks mirror)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample
    found, d = set(), 1
    for block in unet.input_blocks:
        if any(isinstance(m, Downsample) for m in block.modules()):
            d *= 2
        elif any(isinstance(m, SpatialTransformer) for m in block.modules()):
            found.add(d)
    if any(isinstance(m, SpatialTransformer) for m in unet.middle_block.modules()):
        found.add(d)
    return sorted(found) or [1]


def layer_divisors(model) -> tuple[int, int]:
    """(map divisor, least self-attention divisor) for this model: the official layers are relative to the latent
    (the map loss and LocalBlend at latent/4, self-attention swapped at latent/2 or coarser: 16x16 and ≤ 32x32 at
    512 px for SD1.5, 32x32 and 32x32 at 1024 px for SDXL); a model with no layer that coarse uses its coarsest."""
    levels = attention_divisors(require_unet(model, "attention layers"))
    coarsest = max(levels)
    return (4 if 4 in levels else coarsest if coarsest < 4 else min(d for d in levels if d >= 4)), min(2, coarsest)


def install(model, step: Callable[[dict], Optional[int]], cross: Sequence[A.Controller] = (),
            self_: Sequence[A.Controller] = (), attn2: Sequence[Callable] = ()):
    """A clone of ``model`` with the controllers on every block's cross- (attn2) and self-attention (attn1) and the
    attn2 patches (value / context inputs) appended."""
    m = model.clone()
    blocks = attention_blocks(require_unet(m, "attention patches"))
    for name, number in blocks:
        if cross:
            m.set_model_attn2_replace(A.replace_patch(A.CROSS, list(cross), step, fused), name, number)
        if self_:
            m.set_model_attn1_replace(A.replace_patch(A.SELF, list(self_), step, fused), name, number)
    for p in attn2:
        m.set_model_attn2_patch(p)
    return m


def require_sd_model(model, who: str) -> str:
    """The family of an ε/v U-Net model (flow models get a clear error until a flow variant exists)."""
    family = model_family(model.model)
    require_unet(model, who)
    require_vp_model(model.get_model_object("model_sampling"), family, who)
    return family


def model_sigmas(model) -> torch.Tensor:
    return model.get_model_object("model_sampling").sigmas.detach().double().cpu()


def official_grid_of(model, steps: int) -> torch.Tensor:
    """The official leading grid (``optim.stylediffusion.official_grid``) of this model's noise schedule."""
    return sd.official_grid(model_sigmas(model), steps)


def cross_attn(conditioning, who: str) -> torch.Tensor:
    """The [1, L, D] text embedding of a CONDITIONING (its first entry)."""
    if not conditioning:
        raise ValueError(f"{who}: the conditioning is empty; connect a CLIP Text Encode")
    c = conditioning[0][0]
    if c.ndim != 3 or c.shape[0] != 1:
        raise ValueError(f"{who}: expected one prompt's embedding [1, L, D], got {tuple(c.shape)}")
    return c


# -- image tokens -------------------------------------------------------------------------------------------------

def tokens_from_clip_vision(clip_vision, image: torch.Tensor) -> torch.Tensor:
    """[1, N, D] CLIP tokens of a stock CLIP_VISION: post_layernorm on every token of the last hidden state
    (ComfyUI returns it before the norm; the official code takes all tokens after ln_post, without projection)."""
    out = clip_vision.encode_image(image[:1])
    ln = clip_vision.model.vision_model.post_layernorm
    with torch.no_grad():
        return ln(out["last_hidden_state"].to(next(ln.parameters()).device)).float().cpu()


def tokens_from_local_clip(clip, image: torch.Tensor) -> torch.Tensor:
    """[1, N, D] tokens of a local transformers CLIP (``losses.clip.LocalCLIP``), the same way."""
    vm = clip.model.vision_model
    with torch.no_grad():
        pixels = clip.preprocess(image[:1].permute(0, 3, 1, 2))
        return vm.post_layernorm(vm(pixel_values=pixels).last_hidden_state).float().cpu()


# -- inversion ----------------------------------------------------------------------------------------------------

@dataclass
class InversionSettings:
    method: str = "stylediffusion"        # or "null_text"
    schedule: sd.Schedule = field(default_factory=sd.Schedule)
    init: str = "identity"                # mapper init (stylediffusion)
    warm_start: bool = True
    attn_divisors: Optional[tuple] = None  # the map loss's layers (None: layer_divisors, latent/4)
    seed: int = 0
    checkpointing: bool = False           # the U-Net's blocks recomputed in the backward pass (run.block_checkpointing)


class ValueInversionSampler(comfy.samplers.Sampler):
    """Inverts the clean latent the guider passes in along SIGMAS (the official grid) and optimises the per-step
    parameters (``optim.stylediffusion``); positive = the source caption, negative = ∅. Returns the reconstruction
    z̃_0; ``self.result`` holds the ``InversionResult``, ``self.embedding`` the ValueEmbedding's tensors."""

    WHO = "StyleDiffusion inversion"

    def __init__(self, settings: InversionSettings, state: dict, tokens: Optional[torch.Tensor],
                 null: torch.Tensor, on_step=None):
        self.s, self.state, self.tokens, self.null, self.on_step = settings, state, tokens, null, on_step
        self.result = None
        self.x_T = None
        self.values = None  # (scale, shift) or null embeds, [T, L, D]

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        inner = model_wrap.inner_model
        opts = extra_args["model_options"]
        state = self.state  # what the model's patches read (inversion_patches)
        capture: A.CaptureMaps = state["capture"]
        steps = sigmas.numel() - 1
        ones = latent_image.new_ones([latent_image.shape[0]])
        positive, negative = model_wrap.conds["positive"], model_wrap.conds["negative"]

        def eps(x, sigma, label):
            conds = [positive] if label == A.COND else [None, negative]
            d = comfy.samplers.calc_cond_batch(inner, conds, x, sigma * ones, opts)[label]
            return (x - d) / sigma

        total = steps + sum(self.s.schedule.iterations(i) for i in range(steps))
        report = reporter(callback)

        # 1. DDIM inversion at guidance 1, cond branch, recording the maps at each source latent
        capture.detach = True
        capture.clear()

        def inversion_eps(x_in, s_up, j):
            state["step"] = j  # the maps of this step are recorded under j (sd.map_target)
            return eps(x_in, s_up, A.COND)

        with torch.no_grad():
            pivots = sd.ddim_pivots(latent_image * vp_scale(sigmas[-1]), sigmas, inversion_eps,
                                    lambda j, x: report(Step(steps - j, total, x, None, sigmas[j], sigmas[j - 1])))
        targets = {j: maps for j, maps in capture.maps.items()}
        self.x_T = pivots[0]

        # 2. the per-step optimisation (gradients on; nothing made in inference mode may be saved for backward)
        with torch.inference_mode(False), torch.enable_grad():
            targets = {j: [(layer, p.clone()) for layer, p in maps] for j, maps in targets.items()}
            return self.optimise(inner, eps, sigmas.clone(), [p.clone() for p in pivots], targets, capture,
                                 latent_image.device, steps, total, report)

    def optimise(self, inner, eps, sigmas, pivots, targets, capture, device, steps, total, report):
        state = self.state
        capture.detach = False
        sched = self.s.schedule
        cache = {}
        gen = torch.Generator().manual_seed(self.s.seed)
        tokens = None
        if self.s.method == "stylediffusion":
            tokens = self.tokens.clone().to(device, torch.float32)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen)))
                template = sd.ValueMapper(tokens.shape[1], tokens.shape[2], self.null.shape[-1], LENGTH,
                                          self.s.init).to(device)
        else:
            template = self.null[0].clone().to(device, torch.float32)
        warm = sd.WarmStart(template, self.s.warm_start)

        def begin(i, x):
            state["step"] = i
            with torch.no_grad():
                cache["fixed"] = eps(x, sigmas[i], A.UNCOND if self.s.method == "stylediffusion" else A.COND)
            return sd.parameters_of(warm.next())

        def predict(x, i):
            state["step"] = i
            capture.clear()
            if self.s.method == "stylediffusion":
                state["values"] = warm.trained[i](tokens)
                e_u, e_c = cache["fixed"], eps(x, sigmas[i], A.COND)
            else:
                state["null"] = warm.trained[i]
                e_u, e_c = eps(x, sigmas[i], A.UNCOND), cache["fixed"]
            return e_u + sched.guidance * (e_c - e_u), capture.maps.get(i, [])

        def map_loss(maps, i):
            return A.map_loss(maps, targets[sd.map_target(i)])

        def progress(step):
            report(dataclasses.replace(step, i=steps + step.i, total=total))  # after the inversion's steps
            if self.on_step is not None:
                self.on_step(step)

        with block_checkpointing(inner.diffusion_model, enabled=self.s.checkpointing):
            self.result = sd.optimise_steps(pivots[0], pivots, sigmas, begin, predict, sched,
                                            map_loss if self.s.method == "stylediffusion" else None, progress)
        with torch.no_grad():
            if self.s.method == "stylediffusion":
                ab = [m(tokens) for m in warm.trained]
                self.values = (torch.stack([a for a, _ in ab]).float().cpu(),
                               torch.stack([b for _, b in ab]).float().cpu())
            else:
                self.values = torch.stack([e.detach() for e in warm.trained]).float().cpu()
        capture.clear()
        return (self.result.latents[-1] / vp_scale(sigmas[-1])).detach()


def inversion_patches(model, method: str, divisors=(4,)):
    """The model clone an inversion runs on, and the state its patches read (``step``, live ``values`` / ``null``,
    the map ``capture``), which the sampler sets."""
    capture = A.CaptureMaps(divisors)
    state = {"step": None, "values": None, "null": None, "capture": capture}
    step = lambda eo: state["step"]  # noqa: E731  (the loops set it)
    patch = (A.value_film(lambda i: state["values"], step) if method == "stylediffusion"
             else A.context_rows(lambda i: state["null"], step))
    return install(model, step, cross=[capture], attn2=[patch]), state


def invert(model, positive, negative, samples: torch.Tensor, grid: torch.Tensor, tokens: Optional[torch.Tensor],
           settings: InversionSettings, who: str, on_step=None) -> tuple[sd.ValueEmbedding, torch.Tensor, list]:
    """Run the inversion; returns (the ValueEmbedding, the reconstruction LATENT samples, the loss per inner
    iteration)."""
    from .run import run_with_cfg_guider
    family = require_sd_model(model, who)
    null = cross_attn(negative, who)
    src = cross_attn(positive, who)
    if null.shape[1] != LENGTH or src.shape[1] != LENGTH:
        raise ValueError(f"{who}: the prompts must fit one {LENGTH}-token chunk (the source has {src.shape[1]} "
                         f"tokens, the null prompt {null.shape[1]}); shorten the source caption")
    m, state = inversion_patches(model, settings.method, settings.attn_divisors or (layer_divisors(model)[0],))
    sampler = ValueInversionSampler(settings, state, tokens, null, on_step)
    total = grid.numel() - 1 + sum(settings.schedule.iterations(i) for i in range(grid.numel() - 1))
    with private_for_grad(who, m) as private:  # the loop runs on a private copy of the U-Net
        recon = run_with_cfg_guider(private.model, private.conds(positive), private.conds(negative),
                                    settings.schedule.guidance, sampler, samples,
                                    grid, preview_steps=total, seed=settings.seed)
    meta = {"family": family, "ctx_dim": str(src.shape[-1]), "steps": str(grid.numel() - 1),
            "guidance": repr(float(settings.schedule.guidance)), "cond_hash": tensor_hash(src),
            "null_hash": tensor_hash(null), "inner": str(settings.schedule.inner),
            "inner_decay": repr(settings.schedule.inner_decay), "lr": repr(settings.schedule.lr),
            "lr_decay": repr(settings.schedule.lr_decay), "attn_weight": repr(settings.schedule.attn_weight),
            "init": settings.init, "warm_start": str(settings.warm_start), "seed": str(settings.seed),
            "latent_shape": str(list(samples.shape)),
            "iterations": str(sum(sampler.result.iterations)),
            "iterations_per_step": ",".join(map(str, sampler.result.iterations)),
            "final_loss": f"{sampler.result.step_losses[-1]:.6g}", META_KEY: to_meta(fingerprint(model))}
    x_T = sampler.x_T.float().cpu()
    if settings.method == "stylediffusion":
        emb = sd.ValueEmbedding("stylediffusion", grid.double().cpu(), x_T, scale=sampler.values[0],
                                shift=sampler.values[1], meta=meta)
    else:
        emb = sd.ValueEmbedding("null_text", grid.double().cpu(), x_T, null=sampler.values, meta=meta)
    return emb, recon, sampler.result.losses


# -- using an embedding -------------------------------------------------------------------------------------------

def check_embedding(emb: sd.ValueEmbedding, model, who: str, negative=None, guidance: Optional[float] = None,
                    sigmas: Optional[torch.Tensor] = None) -> None:
    """Refuse what would not reproduce the inversion: another model family or context width, another null prompt,
    guidance or grid than the embedding was made with."""
    family = model_family(model.model)
    if emb.meta.get("family", family) != family:
        raise ValueError(f"{who}: the value embedding was made on a {emb.meta['family']} model; this is {family}. "
                         f"Invert the image again on this model")
    width, values = context_width(model), (emb.null if emb.method == "null_text" else emb.scale)
    if width is not None and values.shape[-1] != width:
        raise ValueError(f"{who}: the value embedding holds {values.shape[-1]}-wide text embeddings, {family} takes "
                         f"{width}; invert the image again on this model")
    channels = model.model.latent_format.latent_channels
    if emb.x_T.shape[1] != channels:
        raise ValueError(f"{who}: the value embedding's noise latent has {emb.x_T.shape[1]} channels, {family} works "
                         f"on {channels}; invert the image again on this model")
    made_by = "Null-text Invert" if emb.method == "null_text" else "StyleDiffusion Invert"
    compare(from_meta(emb.meta.get(META_KEY)), model, who, "the value embedding", made_by)
    if negative is not None:
        null = cross_attn(negative, who)
        if str(null.shape[-1]) != emb.meta.get("ctx_dim", str(null.shape[-1])):
            raise ValueError(f"{who}: the value embedding has {emb.meta['ctx_dim']}-wide text embeddings, this "
                             f"model's are {null.shape[-1]}; invert again on this model")
        if emb.meta.get("null_hash") and tensor_hash(null) != emb.meta["null_hash"]:
            raise ValueError(f"{who}: the negative prompt differs from the null prompt the image was inverted with "
                             f"(its embedding hash {tensor_hash(null)} != {emb.meta['null_hash']}); use the same "
                             f"(usually empty) negative prompt and text encoder as the inversion")
    if guidance is not None and not math.isclose(guidance, emb.guidance, rel_tol=1e-6):
        raise ValueError(f"{who}: guidance {guidance} differs from the inversion's {emb.guidance}; the "
                         f"reconstruction holds only at the guidance it was optimised for. Set {emb.guidance}")
    if sigmas is not None:
        grid = emb.sigmas.to(sigmas)
        if sigmas.numel() > grid.numel() or not torch.allclose(sigmas, grid[grid.numel() - sigmas.numel():],
                                                                rtol=1e-4):
            raise ValueError(f"{who}: the SIGMAS ({sigmas.numel() - 1} steps) are not the inversion's grid (or its "
                             f"end for a partial run); use Value Embedding Sigmas")


def value_patch(emb: sd.ValueEmbedding, strength: float = 1.0, tau_v: float = 1.0, apply_to: str = "cond",
                rows: Callable[[int, int], bool] | None = None, step_match: str = "nearest"):
    """The attn2 patch that plays an embedding back: StyleDiffusion's value FiLM (for steps i < τ_v·T) or
    null-text's per-step uncond embeddings; a call's σ matched to the grid's nearest step or (``interpolate``) to a
    blend of the two around it, in log-σ (for other schedulers than the grid)."""
    step = A.grid_stepper(emb.sigmas[:-1], step_match)
    T = emb.steps
    if emb.method == "stylediffusion":
        labels = (A.COND,) if apply_to == "cond" else (A.COND, A.UNCOND)
        n = sd.value_steps(T, tau_v)  # the official i < T·τ_v
        gate = rows or (lambda i, row: i < n)
        return A.value_film(A.baked(emb.scale, emb.shift), step, strength, labels, gate)
    return A.context_rows(A.per_step(emb.null), step)


def apply_embedding(model, emb: sd.ValueEmbedding, strength: float, tau_v: float, apply_to: str, who: str,
                    step_match: str = "nearest"):
    require_sd_model(model, who)
    check_embedding(emb, model, who)
    m = model.clone()
    m.set_model_attn2_patch(value_patch(emb, strength, tau_v, apply_to, step_match=step_match))
    return m


def noise_latent(model, emb: sd.ValueEmbedding) -> torch.Tensor:
    """The embedding's noise latent as a LATENT (VAE space): what a stock sampler with added noise off starts from."""
    return model.model.process_latent_out(emb.x_T.clone()).float()


# -- prompt-to-prompt / P2Plus ------------------------------------------------------------------------------------

def prompt_tokens(clip, text: str, who: str, name: str = "prompt") -> A.PromptTokens:
    """Where the words of ``text`` sit in its token sequence, from the CLIP's own tokenizer: each word's tokens
    counted alone (BPE splits at spaces, so they concatenate to the prompt's); one chunk of 77 tokens at most. An
    ``embedding:<name>`` word is its file's vectors; a name ComfyUI finds no file for (it only logs that and reads
    the words) is refused, naming the ``name``d prompt."""
    def text_tokens(t: str) -> list:
        chunks = next(iter(clip.tokenize(t, return_word_ids=True).values()))
        return chunks, [tok for chunk in chunks for tok, _, w in chunk if w != 0]

    require_embedding_files(clip, text, who, name)
    chunks, whole = text_tokens(text)
    if len(chunks) > 1:
        raise ValueError(f"{who}: {quote(text)} is longer than one {LENGTH}-token chunk ({len(chunks)} chunks); "
                         f"prompt-to-prompt needs each prompt within {LENGTH - 2} tokens, shorten it")
    words = text.split()
    spans, pos, seen, ids = [], 1, [], []
    for w in words:
        toks = text_tokens(w)[1]
        spans.append(tuple(range(pos, pos + len(toks))))
        pos += len(toks)
        seen += toks
        ids += [t if isinstance(t, int) else (w, k) for k, t in enumerate(toks)]  # an embedding's vectors: by word
    if not words or not _same_tokens(seen, whole):
        raise ValueError(f"{who}: {quote(text)} does not split into words the tokenizer keeps apart; write the prompt as "
                         f"plain words (no weights, embeddings or punctuation glued to words)")
    return A.PromptTokens(tuple(words), tuple(spans), pos, tuple(ids))


def _same_tokens(a: list, b: list) -> bool:
    """Token lists equal, an ``embedding:`` name's vectors (tensors among the ids) compared by value."""
    def same(x, y):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
        return x == y
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def word_tokens(prompt: A.PromptTokens, words: str, where: str = "LocalBlend words") -> list[int]:
    """The token positions of every occurrence of the (space-separated) ``words`` in a prompt (as the official
    ``get_word_inds``); a word it lacks is an error naming ``where``."""
    return A.word_positions(prompt, words.split(), where)


@dataclass
class EditSettings:
    mode: str = "replace"          # replace (a word swap) or refine (words added)
    guidance: float = 7.5
    tau_v: float = 0.5             # the target row keeps the learned values for steps i < τ_v·T
    tau_c: float = 0.6             # cross-attention maps injected for i < int(τ_c·(T+1))
    tau_s: float = 0.6             # cond self-attention for i < int(τ_s·T)
    tau_u: float = 0.0             # uncond self-attention (P2Plus) for i < int(τ_u·T)
    blend_source: str = ""         # LocalBlend words of each prompt ("" on both: off)
    blend_target: str = ""
    blend_threshold: float = 0.3
    blend_start: float = 0.2       # from step int(blend_start·T), with the maps summed since step 0
    reweight_words: str = ""
    reweight_factor: float = 1.0
    self_min_divisor: Optional[int] = None  # self-attention swapped where the grid is this coarse (None: auto)


class P2PSampler(comfy.samplers.Sampler):
    """DDIM η = 0 (the σ-space Euler step) on rows [source, target] with LocalBlend after each step
    (``hooks.attention.LocalBlend``: the running sum of the blend layers' maps since step 0, blending from
    ``blend_start``); the attention edits are the model's patches, which read ``state['step']`` set here. Returns
    the rows; ``self.mask`` is the last blend mask [1, 1, h, w] (None without LocalBlend)."""

    WHO = "P2P edit"

    def __init__(self, state: dict, blend_tokens: Optional[list], s: EditSettings):
        self.state, self.blend_tokens, self.s = state, blend_tokens, s
        self.mask = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        x = latent_image
        ones = x.new_ones([x.shape[0]])
        steps = sigmas.numel() - 1
        report = reporter(callback)
        capture: A.CaptureMaps = self.state["capture"]
        blend = (A.LocalBlend(self.blend_tokens, int(self.s.blend_start * steps), self.s.blend_threshold)
                 if self.blend_tokens is not None else None)
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            self.state["step"] = i
            capture.clear()  # the step's maps only: LocalBlend keeps the running sum
            d = model_wrap(x, s * ones, **extra_args)
            x = d if s_next == 0 else x + (s_next - s) * (x - d) / s
            if blend is not None:
                x = blend(i, capture.maps.get(i, []), x)
                self.mask = blend.mask
            report(Step(i, steps, x, d, s, s_next))
        capture.clear()
        return x


def edit(model, clip, source: str, target: str, negative, x_T: torch.Tensor, sigmas: torch.Tensor,
         s: EditSettings, who: str, emb: Optional[sd.ValueEmbedding] = None, seed: int = 0):
    """P2P / P2Plus from a noise latent ``x_T`` (σ-space, model-scaled, one row) along ``sigmas``: returns
    (reconstruction, edited) as LATENT samples and the blend mask [1, h, w] (or None)."""
    from .run import run_with_cfg_guider
    require_sd_model(model, who)
    src, tgt = prompt_tokens(clip, source, who, "source prompt"), prompt_tokens(clip, target, who, "target prompt")
    pair = pair_conditioning(clip, source, target)
    require_conditioning_width(model, {"source and target prompts' (encoded by the clip input)": pair}, who)
    if s.mode == "replace":
        mapper, alpha = A.replace_mapper(src, tgt, LENGTH), None
    elif s.mode == "refine":
        mapper, alpha = A.refine_mapper(src, tgt, LENGTH)
    else:
        raise ValueError(f"{who}: edit must be replace or refine, got {s.mode!r}")
    reweight = (A.reweight_vector(tgt, s.reweight_words.split(), s.reweight_factor, LENGTH)
                if s.reweight_words.strip() and s.reweight_factor != 1.0 else None)
    steps = sigmas.numel() - 1
    blend = None
    if s.blend_source.strip() or s.blend_target.strip():
        blend = [word_tokens(src, s.blend_source, "blend_source (LocalBlend words of the source prompt)"),
                 word_tokens(tgt, s.blend_target, "blend_target (LocalBlend words of the target prompt)")]
    map_div, self_div = layer_divisors(model)
    capture = A.CaptureMaps((map_div,))
    state = {"step": None, "capture": capture}
    step = lambda eo: state["step"]  # noqa: E731
    ctl = A.P2PEdit(A.P2PSchedule(steps, s.tau_c, s.tau_s, s.tau_u, s.self_min_divisor or self_div), mapper, alpha,
                    reweight)
    attn2 = []
    if emb is not None:
        check_embedding(emb, model, who, negative, s.guidance, sigmas)
        # SIGMAS may be the end of the embedding's grid (a partial run): step i of this run is step i + offset of
        # the grid, whose values A_i, B_i / ∅_i it plays and whose index τ_v gates (over the grid's T)
        offset = emb.steps - steps
        grid_step = lambda eo: None if state["step"] is None else state["step"] + offset  # noqa: E731
        if emb.method == "stylediffusion":
            gate = sd.value_steps(emb.steps, s.tau_v)  # the official i < T·τ_v
            attn2.append(A.value_film(A.baked(emb.scale, emb.shift), grid_step,
                                      active=lambda i, row: row == 0 or i < gate))
        else:
            attn2.append(A.context_rows(A.per_step(emb.null), grid_step))
    cross = [ctl] + ([capture] if blend is not None else [])
    m = install(model, step, cross=cross, self_=[ctl], attn2=attn2)
    sampler = P2PSampler(state, blend, s)
    latent = model.model.process_latent_out(x_T.expand(2, *x_T.shape[1:]).clone())
    out = run_with_cfg_guider(m, pair, negative, s.guidance, sampler, latent, sigmas.to(latent), seed=seed)
    mask = sampler.mask[0] if sampler.mask is not None else None
    return out[:1], out[1:2], mask


def pair_conditioning(clip, source: str, target: str):
    """One CONDITIONING whose embedding is the batch [source, target] (ComfyUI gives row r of the latent batch
    row r of a conditioning with the batch's size), pooled outputs likewise."""
    a = clip.encode_from_tokens_scheduled(clip.tokenize(source))
    b = clip.encode_from_tokens_scheduled(clip.tokenize(target))
    (ca, da), (cb, db) = a[0], b[0]
    extra = dict(da)
    if "pooled_output" in da and "pooled_output" in db:
        extra["pooled_output"] = torch.cat([da["pooled_output"], db["pooled_output"]])
    return [[torch.cat([ca, cb]), extra]]
