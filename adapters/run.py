"""Running the pack's samplers and gradient loops inside ComfyUI: through a stock guider (conditioning, model
loading, patches, wrappers, previews), with marked passes, and with gradients through ComfyUI's own models."""
from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import types
from typing import Optional

import torch
import torch.utils.checkpoint
from torch import nn

import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import comfy.utils
import latent_preview

from ..hooks.passes import PASS_KEY, PASSES


def run_with_cfg_guider(model, positive, negative, cfg: float, sampler, samples: torch.Tensor,
                        sigmas: torch.Tensor, on_step=None, noise: Optional[torch.Tensor] = None,
                        preview_steps: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """Run a Sampler through a stock CFGGuider with ComfyUI's preview callback and progress bar (over
    ``preview_steps``, default the SIGMAS' steps) and zero added noise unless ``noise`` is given;
    ``on_step(i, denoised, x, total)`` also sees every step."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    preview = latent_preview.prepare_callback(model, preview_steps or sigmas.shape[-1] - 1, {})

    def callback(i, denoised, x, total):
        if on_step is not None:
            on_step(i, denoised, x, total)
        preview(i, denoised, x, total)

    return guider.sample(torch.zeros_like(samples) if noise is None else noise, samples, sampler, sigmas,
                         callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def pass_options(model_options: dict) -> dict:
    """A copy of ``model_options`` per pass of ``hooks.passes`` (orig, orig_cache, edit), each marking its model
    calls with that pass."""
    opts = {}
    for which in PASSES:
        opts[which] = comfy.model_patcher.create_model_options_clone(model_options)
        opts[which].setdefault("transformer_options", {})[PASS_KEY] = which
    return opts


@contextlib.contextmanager
def grad_context():
    """Gradients on inside a node (ComfyUI runs nodes under inference mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def training_ops():
    """ComfyUI's own switch for gradient work, ``model_management.in_training`` (newer hosts; its trainer sets it
    around the training loop, comfy_extras/nodes_train.py): the models take their pure-torch paths (Flux's RoPE)
    instead of comfy_kitchen's fused kernels, which have no backward. Put back on exit; nothing on hosts without it.
    Set only around forwards under gradients (``inplace_safe``)."""
    mm = comfy.model_management
    if not hasattr(mm, "in_training"):
        yield
        return
    before = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = before


# -- private copies for gradient work -------------------------------------------------------------------------------
# ComfyUI's loaders build their models inside the prompt's inference mode, and one model object is shared by every
# ModelPatcher cloned from it (every node of every cached workflow). Gradient work never touches it: it runs on a
# private copy made outside inference mode, loaded whole on the compute device and released after the node — the way
# ComfyUI's own trainer does it on newer hosts (comfy_extras/nodes_train.py: ``with torch.inference_mode(False):
# mp = model.clone(force_deepcopy=True)``).

MULTIGPU_FIX = ("remove the MultiGPU node from this model's path (gradients through ComfyUI's MultiGPU model calls "
                "are dropped: it evaluates the other GPUs' copies under no_grad), or run this node on a single GPU")
DYNAMIC_FIX = ("start ComfyUI with --disable-dynamic-vram (or --highvram) so that gradient nodes get a fully loaded "
               "model, or free memory / use a smaller model")

_SESSIONS: list = []  # the GradCopies of the gradient nodes running now, innermost last


def refuse_multigpu(patcher, who: str) -> None:
    """A ValueError naming ``who`` and the fix for a MODEL carrying MultiGPU copies (ComfyUI ≥ 0.33: additional models
    under the key "multigpu", or ``model_options["multigpu_clones"]`` set by a sampling run): ComfyUI evaluates them in
    ``_calc_cond_batch_multigpu`` under ``torch.no_grad()``, so a gradient loop would silently get no gradient."""
    opts = getattr(patcher, "model_options", None) or {}
    extra = getattr(patcher, "additional_models", None) or {}
    if "multigpu_clones" in opts or any("multigpu" in str(k).lower() and v for k, v in extra.items()):
        raise ValueError(f"{who}: this MODEL is split over several GPUs by a MultiGPU node; gradient nodes cannot "
                         f"use it. Fix: {MULTIGPU_FIX}.")


def _is_dynamic(patcher) -> bool:
    return bool(getattr(patcher, "is_dynamic", lambda: False)())


_LOAD_STATE = {"model_loaded_weight_memory": 0, "lowvram_patch_counter": 0, "model_lowvram": False,
               "current_weight_patches_uuid": None, "model_offload_buffer_memory": 0, "current_patcher": None}


def _alias(t: torch.Tensor) -> torch.Tensor:
    """An ordinary tensor (not an inference tensor, whatever ``t`` is) over ``t``'s storage: the same memory, no copy.
    Call outside inference mode."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(), t.size(),
                                                               t.stride())


def _copy_module(module: nn.Module, patcher=None) -> nn.Module:
    """A deep copy of ``module`` made outside inference mode: every parameter and buffer a new ordinary tensor object
    (requires_grad off) with the *unpatched* value (a weight a loaded patcher has patched — a LoRA — is taken from the
    patcher's backup, which every clone of a model shares), the object patches undone, and none of the load state
    (lowvram casts, patched flags) of the shared module; nothing of ``module`` is changed. The new tensors alias the
    shared storages (``_alias``): no second copy of the weights in memory while they stay on the device they are on
    (what a lowvram CPU run or a model already resident on the GPU would otherwise pay); a load onto another device,
    or the private patcher's own weight patches, replace the private module's tensors, never write into the shared
    storages (ComfyUI patches and moves parameters out of place; nothing here updates a weight: requires_grad off)."""
    originals = {k: getattr(b, "weight", b) for k, b in (getattr(patcher, "backup", None) or {}).items()}
    originals.update({k: getattr(b, "weight", b) for k, b in (getattr(patcher, "backup_buffers", None) or {}).items()})
    memo = {id(getattr(module, "current_patcher", None)): None}
    config = getattr(module, "model_config", None)
    if config is not None:  # shared, read-only (0.33's model configs do not deep-copy: a model built outside a loader)
        memo[id(config)] = config
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers()):
        if t is None or id(t) in memo:
            continue
        new = _alias(originals.get(name, t))
        memo[id(t)] = nn.Parameter(new, requires_grad=False) if isinstance(t, nn.Parameter) else new
    private = copy.deepcopy(module, memo)
    for key, old in (getattr(patcher, "object_patches_backup", None) or {}).items():
        comfy.utils.set_attr(private, key, copy.deepcopy(old))
    for attr, value in _LOAD_STATE.items():
        if attr in vars(private):
            setattr(private, attr, value)
    for m in private.modules():
        d = vars(m)
        if "prev_comfy_cast_weights" in d:
            m.comfy_cast_weights = d.pop("prev_comfy_cast_weights")
        for attr in ("weight_function", "bias_function"):
            if attr in d:
                setattr(m, attr, [])
        d.pop("comfy_patched_weights", None)
    return private


def _forget_loader_patchers(n) -> None:
    """Take off ComfyUI's list of loaded models the entries of ``n.model`` that belong to another patcher.

    ``clone(force_deepcopy=True)`` runs the core loader again and keeps only the new module; a CLIP loader loads its
    fresh patcher at once where the text encoder's load device is where it was built (the CPU, or a GPU with room), and
    that patcher is dropped on return. Its entry would then hold a dead patcher of a live module (ours), which
    ComfyUI 0.33 reports as "memory leak with model SD1ClipModel" and answers with a full ``gc.collect()`` on every
    later load (measured: 63 collections, 19 s of a 72 s CASO workflow on the CPU)."""
    loaded = comfy.model_management.current_loaded_models
    for i in reversed(range(len(loaded))):
        lm = loaded[i]
        real = lm.real_model() if lm.real_model is not None else None
        if real is n.model and lm.model is not n:
            loaded.pop(i)
            if lm.model_finalizer is not None:
                lm.model_finalizer.detach()


def private_patcher(patcher, who: str):
    """A private ModelPatcher of ``patcher``'s model for gradient work: the same patches (weight patches such as a
    LoRA, applied when it is loaded), object patches, model options (attention patches, wrappers, callbacks), on a
    copy of the model made outside inference mode (requires_grad off everywhere). On hosts whose ``clone`` takes
    ``force_deepcopy`` (ComfyUI ≥ 0.25) and a model a core loader made (``cached_patcher_init``), the copy is loaded
    afresh, non-dynamic, as ComfyUI's trainer does; otherwise the model is deep-copied (``_copy_module``). The shared
    patcher and its model are not changed. Call under ``torch.inference_mode(False)``."""
    refuse_multigpu(patcher, who)
    params = inspect.signature(patcher.clone).parameters
    n = None
    if "force_deepcopy" in params and getattr(patcher, "cached_patcher_init", None) is not None:
        n = patcher.clone(disable_dynamic=True, force_deepcopy=True)
        _forget_loader_patchers(n)
    elif "model_override" in params:
        empty = tuple(type(x)() for x in patcher.get_clone_model_override()[1])
        n = patcher.clone(disable_dynamic=True, model_override=(_copy_module(patcher.model, patcher), empty))
    else:  # ComfyUI 0.3.x: clone() shares the model and its backups
        n = patcher.clone()
        n.model = _copy_module(patcher.model, patcher)
        n.backup, n.object_patches_backup, n.pinned = {}, {}, set()
    # the same patch objects as the shared patcher (ComfyUI ≥ 0.14 copies only the dicts and lists; 0.3.x deep-copies
    # them, which would leave a loop's patches — their state, a trained direction — apart from the ones it reads)
    n.model_options = comfy.model_patcher.create_model_options_clone(patcher.model_options)
    inplace_safe_patches(n.model_options)
    n.parent = None  # ComfyUI's load list would otherwise hand this copy's load state to the shared patcher
    if _is_dynamic(n):
        raise ValueError(f"{who}: ComfyUI gave the gradient copy of this model a dynamic-VRAM patcher, which "
                         f"gradients cannot go through. Fix: {DYNAMIC_FIX}.")
    n.model.requires_grad_(False)
    dm = getattr(n.model, "diffusion_model", None)
    if dm is not None:
        dm.forward = inplace_safe(dm.forward, unet=hasattr(dm, "input_blocks"))
    for t in list(n.model.parameters()) + list(n.model.buffers()):
        if t.is_inference():  # not expected (made outside inference mode); a loader that forced it
            raise ValueError(f"{who}: the private copy of this model still holds inference tensors")
    return n


def inplace_safe(forward, unet: bool):
    """A private diffusion model's ``forward`` made safe to back-propagate through where ComfyUI writes in place into
    tensors autograd saved: while gradients are on, what autograd saves is kept as copies (``_saved_copies``; twice
    the activations of that forward, parameters excepted). A DiT's forward always: ComfyUI's Flux, Flux.2, Chroma and
    HunyuanImage blocks add residuals in place (``img += …``, ``x += …`` in ``comfy/ldm/flux/layers.py``) onto tensors
    a normalisation saved. A U-Net's only when a ControlNet feeds it (``control`` given): its blocks add out of place,
    but ``apply_control`` adds the control into the skip tensors in place after the next block saved them.
    ``torch.func.functionalize`` would spare the copies, but fails on 0.33's Flux (which writes into a tensor it does
    not own) and on closed-over trainable tensors (the U-Net-only nodes' attention patches). A forward under gradients
    also runs with ComfyUI's ``in_training`` switch (``training_ops``: the pure-torch RoPE of 0.33's Flux, whose fused
    kernel has no backward). Without gradients (sampling, the EDICT chains) the forward runs as it is, on the same
    kernels as the stock samplers."""
    copied = _saved_copies(forward)

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        if unet and not kwargs.get("control"):
            with training_ops():
                return forward(*args, **kwargs)
        token = _COPY_BLOCK_INPUTS.set(True)  # a checkpointed block keeps its own copy of its inputs
        try:
            with training_ops():
                return copied(*args, **kwargs)
        finally:
            _COPY_BLOCK_INPUTS.reset(token)
    run.inplace_safe = True
    return run


# Set while a forward that writes into tensors in place runs under gradients (``inplace_safe``): block checkpointing
# then hands each block a copy of its tensor inputs, so that a later in-place add (ControlNet's into the skip tensors)
# cannot change what its recomputation reads.
_COPY_BLOCK_INPUTS = contextvars.ContextVar("invedit_copy_block_inputs", default=False)


def _own_copy(t: torch.Tensor):
    return t if isinstance(t, nn.Parameter) else t.clone()


def _saved_copies(patch):
    """``patch`` (a model-patch function, or a forward) run, while gradients are on, with every tensor autograd saves
    copied as it is saved (``torch.autograd.graph.saved_tensors_hooks``; parameters are not copied), so that it may
    write into a tensor it computed with (FreeU_V2's ``h[:, :half] = h[:, :half] * …``) and the backward pass still
    finds the values it used."""
    @functools.wraps(patch)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return patch(*args, **kwargs)
        with torch.autograd.graph.saved_tensors_hooks(_own_copy, lambda t: t):
            return patch(*args, **kwargs)
    run.inplace_safe = True
    return run


def inplace_safe_patches(model_options: dict) -> None:
    """Make the plain patch functions (``transformer_options["patches"]``: FreeU's output-block patch and the like)
    of a private model-options dict safe to back-propagate through (``_saved_copies``); callable objects (the pack's
    own patches, which compute out of place) are left as they are. ``model_options`` must be a copy owned by the
    caller (a private patcher's, or the per-run clone a sampler is handed)."""
    to = model_options.get("transformer_options")
    if not isinstance(to, dict) or not isinstance(to.get("patches"), dict):
        return
    to["patches"] = {name: [_saved_copies(f) if isinstance(f, types.FunctionType) and not getattr(
        f, "inplace_safe", False) else f for f in fs] for name, fs in to["patches"].items()}


class GradCopies:
    """The private copies one gradient node works on (``private_for_grad``): ``of(obj)`` gives the copy of a MODEL
    (ModelPatcher), VAE, CLIP or CLIP_VISION, made on first use and kept until the node ends; ``load()`` loads them
    all whole on the compute device; ``release()`` unloads them and drops them."""

    def __init__(self, who: str):
        self.who = who
        self._copies: dict = {}   # id(shared object) -> (shared object, private object, private patcher)
        self._controls: dict = {}  # id(shared ControlNet) -> (it, its private copy)

    def of(self, obj):
        if obj is None:
            return None
        hit = self._copies.get(id(obj))
        if hit is not None:
            return hit[1]
        if any(obj is c[1] for c in self._copies.values()):  # already one of the copies
            return obj
        with torch.inference_mode(False):
            if isinstance(obj, comfy.model_patcher.ModelPatcher):
                private = patcher = private_patcher(obj, self.who)
            else:
                attr = next((a for a in ("first_stage_model", "cond_stage_model", "model") if hasattr(obj, a)), None)
                if attr is None or getattr(obj, "patcher", None) is None:
                    raise TypeError(f"{self.who}: cannot make a private copy of a {type(obj).__name__}")
                patcher = private_patcher(obj.patcher, self.who)
                private = copy.copy(obj)  # the VAE / CLIP / CLIP vision object, its module and patcher private
                setattr(private, attr, patcher.model)
                private.patcher = patcher
        self._copies[id(obj)] = (obj, private, patcher)
        return private

    def control(self, control):
        """A private copy of a ControlNet chain of a conditioning (ComfyUI's ``control``, and its
        ``previous_controlnet`` chain): the same object state (hint, strength, window), its control model copied
        outside inference mode (``_copy_module``) with a patcher of its own, loaded whole; made once per node."""
        if control is None:
            return None
        hit = self._controls.get(id(control))
        if hit is not None:
            return hit[1]
        private = copy.copy(control)
        module, wrapped = getattr(control, "control_model", None), getattr(control, "control_model_wrapped", None)
        if isinstance(module, nn.Module):
            with torch.inference_mode(False):
                private.control_model = _copy_module(module)
                private.control_model.requires_grad_(False)
            if wrapped is not None:
                patcher = comfy.model_patcher.ModelPatcher(private.control_model, load_device=wrapped.load_device,
                                                           offload_device=wrapped.offload_device)
                private.control_model_wrapped = patcher
                self._copies[id(wrapped)] = (wrapped, patcher, patcher)
                self.load([patcher])
        if getattr(control, "previous_controlnet", None) is not None:
            private.previous_controlnet = self.control(control.previous_controlnet)
        self._controls[id(control)] = (control, private)  # the shared one kept alive: its id stays its own
        return private

    def conds(self, conditioning):
        """A CONDITIONING with its ControlNets replaced by private copies (``control``): ComfyUI's loaders make the
        control models in inference mode, which autograd cannot save."""
        if conditioning is None:
            return None
        return [[t, dict(d, control=self.control(d["control"]))] if d.get("control") is not None else [t, d]
                for t, d in conditioning]

    @contextlib.contextmanager
    def private_controls(self, conds: dict):
        """A guider's processed conds (``guider.conds``: kind -> list of cond dicts) with their ControlNets private
        while the context runs, put back after."""
        swapped = [(d, d["control"]) for kind in conds.values() for d in (kind or [])
                   if isinstance(d, dict) and d.get("control") is not None]
        for d, c in swapped:
            d["control"] = self.control(c)
        try:
            yield
        finally:
            for d, c in swapped:
                d["control"] = c

    @contextlib.contextmanager
    def active(self):
        """These copies are ``current_copies()`` inside this context (what ``private_for_grad`` does, without
        making, loading or releasing anything)."""
        _SESSIONS.append(self)
        try:
            yield self
        finally:
            _SESSIONS.remove(self)

    def patchers(self) -> list:
        return [p for _, _, p in self._copies.values()]

    def load(self, patchers=None) -> None:
        """Load ``patchers`` (default: every copy's) whole on the compute device; a ValueError naming the node and
        the fix when one could only be loaded in part (gradients through offloaded weights are not supported)."""
        patchers = self.patchers() if patchers is None else list(patchers)
        with torch.inference_mode(False):
            comfy.model_management.load_models_gpu(patchers, force_full_load=True)
        for p in patchers:
            if _is_dynamic(p) or getattr(p.model, "model_lowvram", False) or (
                    p.model_size() > 0 and p.loaded_size() < p.model_size()):
                raise ValueError(f"{self.who}: the model could not be loaded whole on {p.load_device} (gradients "
                                 f"need every weight resident). Fix: {DYNAMIC_FIX}.")

    def release(self) -> None:
        release(self.patchers())
        self._copies.clear()
        self._controls.clear()


def release(patchers) -> None:
    """Unload private patchers (``private_patcher``) and take them off ComfyUI's list of loaded models."""
    loaded = comfy.model_management.current_loaded_models
    for i in reversed(range(len(loaded))):
        if any(loaded[i].model is p for p in patchers):
            lm = loaded.pop(i)
            try:
                if lm.model_finalizer is not None:
                    lm.model_unload()
            except Exception:  # a half-loaded copy: it is dropped anyway
                pass
    comfy.model_management.soft_empty_cache()


def current_copies() -> Optional[GradCopies]:
    """The GradCopies of the innermost gradient node running now (``private_for_grad``), or None."""
    return _SESSIONS[-1] if _SESSIONS else None


class WeightStorages:
    """``storage pointer in WeightStorages(shared)``: whether it is one of ``shared`` or a weight storage of the
    private copies of the gradient node running now (found once per set of copies) — what a measure of the tensors
    autograd saves leaves out to count activations only (``bench.common.LiveBytes``'s ``exclude``)."""

    def __init__(self, shared=frozenset()):
        self.shared, self._state, self._private = frozenset(shared), None, frozenset()

    def __contains__(self, key) -> bool:
        if key in self.shared:
            return True
        copies = current_copies()
        if copies is None:
            return False
        state = (id(copies), len(copies.patchers()))
        if state != self._state:
            self._state = state
            self._private = frozenset(t.untyped_storage().data_ptr() for p in copies.patchers()
                                      for t in (*p.model.parameters(), *p.model.buffers()))
        return key in self._private


@contextlib.contextmanager
def private_for_grad(who: str, model=None, vae=None, clip=None, clip_vision=None):
    """The one path of every gradient node: inside this context gradients are on and ``model`` (a ModelPatcher),
    ``vae``, ``clip`` and ``clip_vision`` have private copies (``GradCopies.of``: made outside inference mode, the
    same patches and options, requires_grad off), loaded whole on the compute device; yields the GradCopies with
    ``.model``, ``.vae``, ``.clip``, ``.clip_vision`` set to them. Other ComfyUI models the loop reaches (a CLIP_VISION
    inside a loss) get theirs from ``current_copies()``. On exit, exceptions and interrupts included, every copy is
    unloaded and dropped; the shared objects are never changed."""
    copies = GradCopies(who)
    try:
        with copies.active(), grad_context():
            copies.model, copies.vae = copies.of(model), copies.of(vae)
            copies.clip, copies.clip_vision = copies.of(clip), copies.of(clip_vision)
            copies.load()
            yield copies
    finally:
        copies.release()


@contextlib.contextmanager
def private_sampling(model_wrap, who: str, vae=None, model_options: Optional[dict] = None):
    """For a loop running inside a guider it did not build (a SAMPLER given to a stock sampler node, a guider's
    wrapper): ``private_for_grad`` of the guider's ModelPatcher (and ``vae``), with the guider's ``inner_model``
    pointed at the private model and its conds' ControlNets at private copies while the context runs (its hooks
    state prepared, ``pre_run``), then the guider's own model and ControlNets back, loaded again for the sampling that
    may follow; ``model_options``, the per-run clone the sampler was handed, gets in-place-safe patch functions
    (``inplace_safe_patches``). Yields the GradCopies."""
    refuse_multigpu(model_wrap, who)  # the guider's options carry the MultiGPU copies while it samples (≥ 0.33)
    shared = model_wrap.model_patcher
    inner = model_wrap.inner_model
    if model_options is not None:
        inplace_safe_patches(model_options)
    with private_for_grad(who, shared, vae=vae) as p, p.private_controls(getattr(model_wrap, "conds", None) or {}):
        p.model.pre_run()
        model_wrap.inner_model = p.model.model
        try:
            yield p
        finally:
            model_wrap.inner_model = inner
            p.model.cleanup()
    comfy.model_management.load_models_gpu([shared])


def checkpoint_blocks(module: nn.Module) -> list:
    """The highest sub-modules of ``module`` with a forward of their own, looking through ModuleList / Sequential /
    ModuleDict and through plain ``nn.Module()`` holders (no forward: their parent calls their children itself):
    a U-Net's ResBlocks, SpatialTransformers and samplers (TimestepEmbedSequential is a Sequential), an MMDiT's joint
    blocks, a VAE decoder's ResnetBlocks, attention and upsamplers (its ``mid`` and ``up[i]`` are holders).
    ComfyUI's LoRA training (comfy_extras/nodes_train.py) checkpoints the same set but for the holders."""
    out = []
    for child in module.children():
        holder = (isinstance(child, (nn.ModuleList, nn.Sequential, nn.ModuleDict))
                  or type(child).forward is nn.Module.forward)
        out += checkpoint_blocks(child) if holder else [child]
    return out


@contextlib.contextmanager
def block_checkpointing(*modules: Optional[nn.Module], enabled: bool = True):
    """Gradient checkpointing per block inside this context: each of ``checkpoint_blocks(module)`` runs, while
    gradients are on, as a non-reentrant ``torch.utils.checkpoint`` segment, so that the backward pass keeps only the
    blocks' inputs and recomputes one block's activations at a time (the same values and gradients; about one more
    forward in time). The blocks get their own forward back on exit. ``enabled`` False: nothing changes."""
    blocks = [b for m in modules if enabled and m is not None for b in checkpoint_blocks(m)]

    def wrap(block):
        forward = block.forward

        def checkpointed(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            # ComfyUI's models hand transformer_options down as one dict that they change while they run (the block
            # being run, its transformer index: the keys of the attention patches); each block gets a shallow copy
            # of what it was given, so that its recomputation in the backward pass sees the same
            args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            if _COPY_BLOCK_INPUTS.get():
                args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, context_fn=_recompute_copies,
                                                     **kwargs)
        return checkpointed

    own = [b.__dict__.get("forward") for b in blocks]  # a forward already set on the instance is put back
    for b in blocks:
        b.forward = wrap(b)
    try:
        yield len(blocks)
    finally:
        for b, f in zip(blocks, own):
            if f is None:
                del b.forward
            else:
                b.forward = f


# Diffusion models whose blocks compute out of place (ComfyUI's U-Net, SD3's MMDiT): block checkpointing recomputes
# them exactly. The Flux-family blocks (Flux, Flux.2, Chroma, HunyuanImage) add residuals in place onto their own
# inputs, which a recomputation would read changed; the other DiTs are unproven.
CHECKPOINTABLE = ("UNetModel", "MMDiT", "OpenAISignatureMMDITWrapper")


def require_checkpointable(diffusion_model, family: str, who: str) -> None:
    """Refuse gradient checkpointing for a diffusion model outside ``CHECKPOINTABLE``, naming the family and the fix."""
    if type(diffusion_model).__name__ not in CHECKPOINTABLE:
        raise ValueError(f"{who}: gradient checkpointing is not available on {family}: ComfyUI's "
                         f"{type(diffusion_model).__name__} blocks are not known to recompute exactly (the Flux-family "
                         f"ones add residuals in place onto their inputs, which a recomputed block would read changed); "
                         f"turn grad_checkpointing off: the result is the same, it only trades memory for time "
                         f"(available on SD1.x/SD2.x/SDXL and SD3).")


def _recompute_copies():
    """torch.utils.checkpoint's ``context_fn``: nothing around the first forward, ComfyUI's training switch
    (``training_ops``) around the recomputation in the backward pass, which runs outside the forward's. (Saved-tensor
    hooks cannot go there: the checkpoint counts the tensors its recomputation saves through its own.)"""
    return contextlib.nullcontext(), training_ops()


def vae_decoder(vae) -> nn.Module:
    """The decoder of a stock VAE (AutoencoderKL's ``decoder``, TAESD's ``taesd_decoder``; else the whole model): what
    block_checkpointing recomputes of a decode."""
    fsm = vae.first_stage_model
    return getattr(fsm, "decoder", None) or getattr(fsm, "taesd_decoder", None) or fsm


def load_for_grad(model_wrap, vae) -> None:
    """Load the guider's U-Net beside the VAE whole on the compute device, for a loop that differentiates through
    them; both must be private copies of the running gradient node (``private_for_grad``)."""
    copies = current_copies()
    mine = copies.patchers() if copies is not None else []
    patchers = [vae.patcher, getattr(model_wrap, "model_patcher", None)]
    if copies is None or not all(any(p is q for q in mine) for p in patchers):
        raise RuntimeError("load_for_grad: the loop must run on the private copies of private_for_grad")
    copies.load(patchers)


def decode_01(vae, base_model, x: torch.Tensor) -> torch.Tensor:
    """A model-space latent → [B, 3, H, W] pixels in [0, 1] (not clamped), differentiable: the VAE's own decoder
    (``first_stage_model.decode``; the VAE node's ``decode`` is not); a 5-D latent's frames side by side in the batch."""
    z = base_model.process_latent_out(x).to(vae.device, vae.vae_dtype)
    pixels = (vae.first_stage_model.decode(z).float() + 1) / 2
    if pixels.ndim == 5:  # a video VAE (Qwen-Image's Wan 2.1): [B, 3, T, H, W] -> the frames as images [B·T, 3, H, W]
        pixels = pixels.movedim(2, 1).flatten(0, 1)
    return pixels
