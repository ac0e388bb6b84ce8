"""A model's fingerprint: what tells one model of a family from another, cheaply, so that an artifact that must be
replayed on the model it was made with (an EDICT or BDIA pair, a DDIM-inverted LATENT, null-text and StyleDiffusion
value embeddings, h-space directions) is compared on replay with the model it is replayed on.

Four parts, each a short string (``fingerprint``):

- ``sampling``: the model-sampling kind (prediction type + schedule: ``EPS + ModelSamplingDiscrete``) and its
  settings: σ_min, σ_max, σ_data, shift, multiplier and a hash of the discrete σ table (a ModelSamplingDiscrete
  v-prediction or zsnr patch, a ModelSamplingSD3 shift all change it);
- ``weights``: a hash of 64 evenly strided values (as float32) of three of the diffusion model's weight tensors
  (the first, middle and last of its matrices by name), read from the unpatched weights (a patcher's backup where
  a LoRA is applied in place, by this patcher or a clone sharing the model);
- ``patches``: the weight patches of the ModelPatcher (a LoRA, a stock model merge): every patched key with its
  strengths, and the content of eight of them (64 values of each tensor);
- ``wrappers``: the names of the functions that change the prediction through ``model_options`` (the model
  function wrapper, the cfg functions, the transformer patches and replacements: FreeU, PAG, a hook of another
  pack); the pack's own patches are left out (they are what its artifacts apply, and they compose).

What it cannot tell: two checkpoints equal in the sampled values (a fine-tune that left those three tensors alone),
two wrappers of the same function with other settings (FreeU's b1, b2), conditioning hooks (hook LoRAs keyed on a
CONDITIONING), a ControlNet (it is in the conditioning, which each node checks on its own). Pure functions of the
ModelPatcher; no weights are copied but the sampled values.

``compare`` says what differs: the sampling refuses where the artifact is an exact inversion (its noise belongs to
another prediction or schedule), the rest warns (``progress.warn``: on the console and as a toast in the
frontend, web/js/warnings.js): the result is then the other model's, which may be what the user wants (an edit through a
LoRA), but is not the reconstruction.
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

import torch

from .checks import model_family, sampling_kind
from .progress import warn

META_KEY = "model_fingerprint"     # the metadata key in the pack's files, and the InversionInfo field
PARTS = ("sampling", "weights", "patches", "wrappers")
SAMPLES = 64
PATCHED_CONTENT = 8


def _digest(h) -> str:
    return h.hexdigest()[:12]


def _feed_tensor(h, t: torch.Tensor) -> None:
    """SAMPLES evenly strided values of ``t`` as float32 bytes (any dtype, any device; fp8 and quantized tensors
    through their float values); a tensor with no data (meta) feeds its shape only."""
    h.update(str(tuple(t.shape)).encode())
    if t.device.type == "meta" or t.numel() == 0:
        return
    try:
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLES)
        h.update(flat[::step][:SAMPLES].float().cpu().contiguous().numpy().tobytes())
    except Exception:  # a weight the host keeps unreadable here (offloaded, a quantized layout): its shape only
        h.update(b"unreadable")


def _feed(h, v, depth: int = 0) -> None:
    """A patch's content: tensors sampled, numbers and strings by value, adapters by their weights."""
    if depth > 4:
        return
    if isinstance(v, torch.Tensor):
        _feed_tensor(h, v)
    elif isinstance(v, (tuple, list)):
        for x in v:
            _feed(h, x, depth + 1)
    elif isinstance(v, (int, float, str, bool)) or v is None:
        h.update(repr(v).encode())
    elif hasattr(v, "weights"):        # comfy.weight_adapter adapters (LoRA, LoHa, …)
        h.update(type(v).__name__.encode())
        _feed(h, v.weights, depth + 1)
    else:
        h.update(_name(v).encode())


def _name(f) -> str:
    f = getattr(f, "func", f)          # functools.partial
    n = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{getattr(f, '__module__', None) or type(f).__module__}.{n}"


def sampling_signature(model_sampling) -> str:
    parts = [sampling_kind(model_sampling)]
    for attr in ("sigma_min", "sigma_max", "sigma_data", "shift", "multiplier"):
        v = getattr(model_sampling, attr, None)
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = float(v)
        if isinstance(v, (int, float)):
            parts.append(f"{attr} {float(v):.6g}")
    table = getattr(model_sampling, "sigmas", None)
    if isinstance(table, torch.Tensor) and table.numel() > 1:
        h = hashlib.sha256()
        h.update(table.detach().float().cpu().contiguous().numpy().tobytes())
        parts.append(f"table {_digest(h)}")
    return ", ".join(parts)


def _backups(model_patcher) -> dict:
    """The unpatched weights of every loaded patcher that shares this one's model (a LoRA applied in place by a
    clone leaves the originals in that clone's backup)."""
    out = {}
    try:
        import comfy.model_management as mm
        for lm in list(getattr(mm, "current_loaded_models", [])):
            p = getattr(lm, "model", None)
            if p is not None and p is not model_patcher and getattr(p, "model", None) is model_patcher.model:
                out.update(getattr(p, "backup", {}) or {})
    except Exception:   # the loaded-model list is the host's; a fingerprint never fails a node
        pass
    out.update(getattr(model_patcher, "backup", {}) or {})
    return out


def weights_digest(model_patcher) -> str:
    base = model_patcher.model
    named = [(k, p) for k, p in base.diffusion_model.named_parameters() if p.ndim >= 2]
    if not named:
        return "none"
    named.sort(key=lambda kp: kp[0])
    backup = _backups(model_patcher)
    h = hashlib.sha256()
    for k, p in (named[0], named[len(named) // 2], named[-1]):
        bk = backup.get(f"diffusion_model.{k}")
        h.update(k.encode())
        _feed_tensor(h, bk.weight if bk is not None else p)
    return _digest(h)


def patches_digest(model_patcher) -> str:
    patches = getattr(model_patcher, "patches", {}) or {}
    keys = sorted(k for k, v in patches.items() if v)
    if not keys:
        return "none"
    h = hashlib.sha256()
    content = set(keys[i * len(keys) // PATCHED_CONTENT] for i in range(min(PATCHED_CONTENT, len(keys))))
    for k in keys:
        h.update(k.encode())
        for strength_patch, value, strength_model, offset, function, *_ in patches[k]:
            h.update(repr((float(strength_patch), float(strength_model), offset, _name(function) if function
                           else None)).encode())
            if k in content:
                _feed(h, value)
    return f"{len(keys)} keys, {_digest(h)}"


PACK = __name__.rsplit(".", 2)[0] + "."   # the pack's own patches are what its artifacts apply: not counted


def wrapper_names(model_patcher) -> str:
    mo = getattr(model_patcher, "model_options", {}) or {}
    names = []
    for key in ("model_function_wrapper", "sampler_cfg_function"):
        if mo.get(key) is not None:
            names.append(f"{key}: {_name(mo[key])}")
    for key in ("sampler_pre_cfg_function", "sampler_post_cfg_function"):
        names += [f"{key}: {_name(f)}" for f in mo.get(key, []) or []]
    to = mo.get("transformer_options", {}) or {}
    for name, fns in sorted((to.get("patches") or {}).items()):
        names += [f"patch {name}: {_name(f)}" for f in fns]
    for name, block in sorted((to.get("patches_replace") or {}).items()):
        names += [f"replace {name} {key}: {_name(f)}" for key, f in sorted(block.items(), key=lambda kv: str(kv[0]))]
    return "; ".join(n for n in names if not n.split(": ", 1)[1].startswith(PACK)) or "none"


def fingerprint(model_patcher) -> dict:
    """The model's fingerprint (``PARTS``, plus the family), strings only (file metadata holds it as JSON)."""
    return {"family": model_family(model_patcher.model),
            "sampling": sampling_signature(model_patcher.get_model_object("model_sampling")),
            "weights": weights_digest(model_patcher), "patches": patches_digest(model_patcher),
            "wrappers": wrapper_names(model_patcher)}


def to_meta(fp: dict) -> str:
    return json.dumps(fp, sort_keys=True)


def from_meta(text: Optional[str]) -> Optional[dict]:
    """The fingerprint a file's metadata holds, or None (older files, or a field edited into something else)."""
    if not text:
        return None
    try:
        fp = json.loads(text)
    except ValueError:
        return None
    return fp if isinstance(fp, dict) and all(isinstance(v, str) for v in fp.values()) else None


DESCRIBE = {"sampling": "its sampling (prediction type / schedule) is {theirs} there, {ours} here",
            "weights": "its weights differ (another checkpoint, or the same one in another precision)",
            "patches": "its weight patches differ (LoRA / model merge: {theirs} there, {ours} here)",
            "wrappers": "the patches that change its prediction differ ({theirs} there, {ours} here)"}


def differences(stored: Optional[dict], model_patcher) -> list[tuple[str, str]]:
    """(part, what differs) for each part of ``stored`` that this model does not have; [] without a record."""
    if not stored:
        return []
    ours = fingerprint(model_patcher)
    return [(k, DESCRIBE[k].format(theirs=stored[k], ours=ours[k])) for k in PARTS
            if k in stored and stored[k] != ours[k]]


def compare(stored: Optional[dict], model_patcher, who: str, what: str, made_by: str, exact: bool = True) -> list:
    """Compare an artifact's fingerprint with the model it is replayed on. ``what``: the artifact ("the pair"),
    ``made_by``: the node that made it. Another sampling refuses where ``exact`` (the artifact is an exact
    inversion); every other difference warns (console + toast) and is returned."""
    diffs = differences(stored, model_patcher)
    fix = (f"connect the same MODEL (the same checkpoint, LoRAs and model patches) as {made_by} had, or run "
           f"{made_by} again on this model")
    if exact and any(k == "sampling" for k, _ in diffs):
        text = dict(diffs)["sampling"]
        raise ValueError(f"{who}: {what} was made with another model: {text}. Its noise belongs to that model's "
                         f"prediction and schedule, so it cannot be replayed here; {fix}.")
    if diffs:
        warn(who, f"{what} was made with another model than this one: {'; '.join(t for _, t in diffs)}. The result "
                  f"is this model's, not a reproduction of {made_by}'s: {fix}, unless that is what you want.")
    return diffs
