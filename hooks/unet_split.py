"""The U-Net forward of ComfyUI 0.3.75 (``UNetModel._forward``) split in two — encoder + middle block, then decoder —
so that an Asyrp step can run the encoder once and the decoder twice (with and without the h-space shift): the input,
time embedding, context and skip connections are the same for both predictions, only h differs.

``SharedEncoder`` is a DIFFUSION_MODEL wrapper. On the unshifted pass of an edit step (``hooks.passes.CACHE``)
it runs the split forward and keeps the encoder state; on the shifted pass (``EDIT``) it reuses that state when the
call's input, timesteps and conditioning are identical to the cached call's (else it runs the full forward), so only the
decoder runs. Every patch ComfyUI's forward applies is applied here in the same order; a test checks that the split
forward equals ComfyUI's bit for bit. The split is a copy of that one version's code: on any other ComfyUI whose
``UNetModel._forward`` source differs (``split_matches_host``, a hash of the source), the wrapper runs full forwards
instead (correct, without the saving) and says so once in the log.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass

import torch

from .passes import CACHE, EDIT, pass_of

log = logging.getLogger(__name__)
# sha256 (first 16 hex digits) of inspect.getsource(UNetModel._forward) in ComfyUI 0.3.75, the code split here
UPSTREAM_FORWARD_SHA = "79c1456902b447e8"
_matches: dict = {}


def split_matches_host(unet) -> bool:
    """Whether this U-Net's ``_forward`` is the source this module splits (checked once per class)."""
    cls = type(unet)
    if cls not in _matches:
        try:
            digest = hashlib.sha256(inspect.getsource(cls._forward).encode()).hexdigest()[:16]
        except (OSError, TypeError, AttributeError):
            digest = None
        _matches[cls] = digest == UPSTREAM_FORWARD_SHA
        if not _matches[cls]:
            log.warning("InvEdit: this ComfyUI's UNetModel._forward differs from the 0.3.75 code the h-space shared "
                        "encoder splits; Asyrp edit steps run two full U-Net passes instead (same result, slower).")
    return _matches[cls]


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


def encode(unet, x, timesteps, context, y, control, transformer_options, **kwargs) -> EncoderState:
    """UNetModel._forward up to and including the middle block (and its ControlNet residual)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import apply_control, forward_timestep_embed, timestep_embedding
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    patches = transformer_options.get("patches", {})
    video = dict(time_context=kwargs.get("time_context"),
                 num_video_frames=kwargs.get("num_video_frames", unet.default_num_video_frames),
                 image_only_indicator=kwargs.get("image_only_indicator"))
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


def decode(unet, state: EncoderState, context, control, transformer_options, **kwargs) -> torch.Tensor:
    """UNetModel._forward from output block 0 (where the h-space patch acts) to the output."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import apply_control, forward_timestep_embed
    patches = transformer_options.get("patches", {})
    video = dict(time_context=kwargs.get("time_context"),
                 num_video_frames=kwargs.get("num_video_frames", unet.default_num_video_frames),
                 image_only_indicator=kwargs.get("image_only_indicator"))
    transformer_options["original_shape"] = list(state.x.shape)
    transformer_options["transformer_index"] = state.transformer_index
    hs = list(state.hs)
    h = state.h
    for i, module in enumerate(unet.output_blocks):
        transformer_options["block"] = ("output", i)
        hsp = apply_control(hs.pop(), control, "output")
        for p in patches.get("output_block_patch", []):
            h, hsp = p(h, hsp, transformer_options)
        h = torch.cat([h, hsp], dim=1)
        del hsp
        output_shape = hs[-1].shape if hs else None
        h = forward_timestep_embed(module, h, state.emb, context, transformer_options, output_shape, **video)
    h = h.type(state.x.dtype)
    return unet.id_predictor(h) if unet.predict_codebook_ids else unet.out(h)


class SharedEncoder:
    """DIFFUSION_MODEL wrapper sharing the encoder between the two predictions of an Asyrp step (see the module
    docstring). ``hits`` / ``misses`` count reuses and fallbacks (diagnostics, tests)."""

    def __init__(self):
        self.cache: list[EncoderState] = []
        self.hits = self.misses = 0

    def clear(self):
        self.cache.clear()

    def __call__(self, executor, x, timesteps=None, context=None, y=None, control=None, transformer_options=None,
                 **kwargs):
        transformer_options = {} if transformer_options is None else transformer_options
        which = pass_of(transformer_options)
        unet = executor.class_obj
        if which not in (CACHE, EDIT) or not split_matches_host(unet):
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        if which == CACHE:
            state = encode(unet, x, timesteps, context, y, control, transformer_options, **kwargs)
            self.cache.append(state)
            return decode(unet, state, context, control, transformer_options, **kwargs)
        state = self.cache.pop(0) if self.cache else None
        if state is None or not (_same(state.x, x) and _same(state.timesteps, timesteps)
                                 and _same(state.context, context) and _same(state.y, y)):
            self.misses += 1
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        self.hits += 1
        return decode(unet, state, context, control, transformer_options, **kwargs)
