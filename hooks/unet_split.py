"""ComfyUI's U-Net forward (``UNetModel._forward``) split in two — encoder + middle block, then decoder — so that an
Asyrp step can run the encoder once and the decoder twice (with and without the h-space shift): the input, time
embedding, context and skip connections are the same for both predictions, only h differs.

``SharedEncoder`` is a DIFFUSION_MODEL wrapper. On the unshifted pass of an edit step (``hooks.passes.CACHE``)
it runs the split forward and keeps the encoder state in the sampling run's state (``hooks.run_state``); on the shifted
pass (``EDIT``) it reuses that state when the call's input, timesteps and conditioning are identical to the cached
call's (else it runs the full forward), so only the decoder runs. Every patch ComfyUI's forward applies is applied here
in the same order; tests check that the split forward equals ComfyUI's bit for bit.

The split is a copy of the host's code, so it is kept per known version of that code (``KNOWN_FORWARDS``, keyed by a
hash of ``inspect.getsource(UNetModel._forward)``):

- 0.3.75 … 0.19: the split point is after the middle block and its ControlNet residual;
- 0.20 … 0.33: the forward also runs ``middle_block_after_patch`` there (``ModelPatcher.set_model_middle_block_after_patch``,
  where the h-space shift sits on these hosts, ``adapters.hspace``) and skips the skip concatenation of a ``None`` skip;
  the split point is before those patches, so the shifted pass's decoder runs them on the shared h.

Why not the hook alone: ``middle_block_after_patch`` may only replace h, while the decoder also needs the skip
connections, time embedding and context, locals of ``_forward``; the second decoder run is therefore this module's.
On a ComfyUI whose ``_forward`` is none of these (``split_variant`` is None) the wrapper runs full forwards instead
(correct, without the saving; the shift still acts through the host's patch) and says so once in the log.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from .passes import CACHE, EDIT, pass_of
from .run_state import run_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardVariant:
    """One known ``UNetModel._forward``: where it came from and the two lines that changed after 0.19."""
    hosts: str
    middle_block_after_patch: bool  # runs transformer_patches["middle_block_after_patch"] after the middle block
    optional_skip: bool             # `if hsp is not None:` around the skip concatenation


# sha256 (first 16 hex digits) of inspect.getsource(UNetModel._forward) -> the code split here
KNOWN_FORWARDS = {
    "79c1456902b447e8": ForwardVariant("ComfyUI 0.3.75 … 0.19", False, False),
    "01943424a1d6e646": ForwardVariant("ComfyUI 0.20 … 0.33", True, True),
}
UPSTREAM_FORWARD_SHA = "79c1456902b447e8"  # the first one split (0.3.75); kept for callers of the old name
_variants: dict = {}


def forward_digest(cls) -> Optional[str]:
    try:
        return hashlib.sha256(inspect.getsource(cls._forward).encode()).hexdigest()[:16]
    except (OSError, TypeError, AttributeError):
        return None


def split_variant(unet) -> Optional[ForwardVariant]:
    """The known forward this U-Net's ``_forward`` is, or None (checked once per class; warns once when unknown)."""
    cls = type(unet)
    if cls not in _variants:
        digest = forward_digest(cls)
        _variants[cls] = KNOWN_FORWARDS.get(digest)
        if _variants[cls] is None:
            log.warning("InvEdit: this ComfyUI's UNetModel._forward (digest %s) is none of the versions the h-space "
                        "shared encoder splits (%s); Asyrp edit steps run two full U-Net passes instead (same "
                        "result, slower).", digest, ", ".join(v.hosts for v in KNOWN_FORWARDS.values()))
    return _variants[cls]


def split_matches_host(unet) -> bool:
    """Whether this U-Net's ``_forward`` is one of the sources this module splits."""
    return split_variant(unet) is not None


@dataclass
class EncoderState:
    x: torch.Tensor
    timesteps: torch.Tensor
    context: object
    y: object
    h: torch.Tensor
    hs: list
    emb: torch.Tensor
    transformer_index: int


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a is b or a == b


def _video(unet, kwargs) -> dict:
    return dict(time_context=kwargs.get("time_context"),
                num_video_frames=kwargs.get("num_video_frames", unet.default_num_video_frames),
                image_only_indicator=kwargs.get("image_only_indicator"))


def encode(unet, x, timesteps, context, y, control, transformer_options, **kwargs) -> EncoderState:
    """UNetModel._forward up to and including the middle block (and its ControlNet residual): h before any
    ``middle_block_after_patch``."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import apply_control, forward_timestep_embed, timestep_embedding
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    patches = transformer_options.get("patches", {})
    video = _video(unet, kwargs)
    t_emb = timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype)
    emb = unet.time_embed(t_emb)
    for p in patches.get("emb_patch", []):
        emb = p(emb, unet.model_channels, transformer_options)
    if unet.num_classes is not None:
        emb = emb + unet.label_emb(y)
    hs = []
    h = x
    for i, module in enumerate(unet.input_blocks):
        transformer_options["block"] = ("input", i)
        h = forward_timestep_embed(module, h, emb, context, transformer_options, **video)
        h = apply_control(h, control, "input")
        for p in patches.get("input_block_patch", []):
            h = p(h, transformer_options)
        hs.append(h)
        for p in patches.get("input_block_patch_after_skip", []):
            h = p(h, transformer_options)
    transformer_options["block"] = ("middle", 0)
    if unet.middle_block is not None:
        h = forward_timestep_embed(unet.middle_block, h, emb, context, transformer_options, **video)
    h = apply_control(h, control, "middle")
    return EncoderState(x, timesteps, context, y, h, hs, emb, transformer_options.get("transformer_index", 0))


def decode(unet, state: EncoderState, context, control, transformer_options, variant: Optional[ForwardVariant] = None,
           **kwargs) -> torch.Tensor:
    """UNetModel._forward from the middle block's output (``middle_block_after_patch`` on hosts that run it, then
    output block 0, where the older hosts' h-space patch acts) to the output. ``variant``: the host's
    (default ``split_variant(unet)``; the 0.3.75 code for an unknown forward)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import apply_control, forward_timestep_embed
    v = variant or split_variant(unet) or KNOWN_FORWARDS[UPSTREAM_FORWARD_SHA]
    patches = transformer_options.get("patches", {})
    video = _video(unet, kwargs)
    transformer_options["original_shape"] = list(state.x.shape)
    transformer_options["transformer_index"] = state.transformer_index
    hs = list(state.hs)
    h = state.h
    if v.middle_block_after_patch:
        transformer_options["block"] = ("middle", 0)
        for p in patches.get("middle_block_after_patch", []):
            h = p({"h": h, "x": state.x, "emb": state.emb, "context": context, "y": state.y,
                   "timesteps": state.timesteps, "transformer_options": transformer_options})["h"]
    for i, module in enumerate(unet.output_blocks):
        transformer_options["block"] = ("output", i)
        hsp = apply_control(hs.pop(), control, "output")
        for p in patches.get("output_block_patch", []):
            h, hsp = p(h, hsp, transformer_options)
        if hsp is not None or not v.optional_skip:
            h = torch.cat([h, hsp], dim=1)
        del hsp
        output_shape = hs[-1].shape if hs else None
        h = forward_timestep_embed(module, h, state.emb, context, transformer_options, output_shape, **video)
    h = h.type(state.x.dtype)
    return unet.id_predictor(h) if unet.predict_codebook_ids else unet.out(h)


def forward(unet, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, **kwargs):
    """The split forward in one call (encode then decode): ComfyUI's ``_forward`` of the known variants, bit for bit."""
    transformer_options = {} if transformer_options is None else transformer_options
    variant = split_variant(unet)
    state = encode(unet, x, timesteps, context, y, control, transformer_options, **kwargs)
    return decode(unet, state, context, control, transformer_options, variant, **kwargs)


class SharedEncoder:
    """DIFFUSION_MODEL wrapper sharing the encoder between the two predictions of an Asyrp step (see the module
    docstring). Stateless: the cached encoder states and the hit / miss counts live in the sampling run's
    ``hooks.run_state.RunState`` (``encoder_cache``, ``hits``, ``misses``), so clones sharing this object share
    nothing. Without a run state (a call outside a wrapped sampling run) both passes run full forwards."""

    def __call__(self, executor, x, timesteps=None, context=None, y=None, control=None, transformer_options=None,
                 **kwargs):
        transformer_options = {} if transformer_options is None else transformer_options
        which = pass_of(transformer_options)
        run = run_state(transformer_options)
        if which not in (CACHE, EDIT) or run is None:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        unet = executor.class_obj
        variant = split_variant(unet)
        if variant is None:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        if which == CACHE:
            state = encode(unet, x, timesteps, context, y, control, transformer_options, **kwargs)
            run.encoder_cache.append(state)
            return decode(unet, state, context, control, transformer_options, variant, **kwargs)
        state = run.encoder_cache.pop(0) if run.encoder_cache else None
        if state is None or not (_same(state.x, x) and _same(state.timesteps, timesteps)
                                 and _same(state.context, context) and _same(state.y, y)):
            run.misses += 1
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        run.hits += 1
        return decode(unet, state, context, control, transformer_options, variant, **kwargs)
