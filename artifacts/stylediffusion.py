"""Value-embedding files (``invedit_value_embed/1``): what a StyleDiffusion or null-text inversion learned for one
image (``optim.stylediffusion.ValueEmbedding``). Tensors: ``value.scale`` and ``value.shift`` [T, L, D] float32
(StyleDiffusion's A_i, B_i) or ``null.embeds`` [T, L, D] (null-text's ∅_i); ``grid.sigmas`` [T + 1] float64 (the
steps' noise levels, descending, the last two equal on the official grid); ``latent.x_T`` [1, C, h, w] float32 (the
noise latent, σ-space, model-scaled). Metadata (strings): ``format``, ``method``, ``family``, ``ctx_dim``,
``steps``, ``guidance``, ``cond_hash`` and ``null_hash`` (of the source and null conditionings), the settings,
``model_fingerprint`` (adapters.fingerprint). Validated on load: every tensor against the others (T steps, 77 tokens,
a falling grid) and every field the pack reads against the tensors (steps, ctx_dim, latent_shape) or its type.
"""
from __future__ import annotations

import json
import math

import torch

from ..optim.stylediffusion import CHUNK, METHODS, ValueEmbedding
from . import ArtifactError, Kind, check_fingerprint_field, register

FORMAT = "invedit_value_embed/1"


def _validate(tensors: dict, meta: dict, name: str) -> None:
    method = meta.get("method")
    if method not in METHODS:
        raise ArtifactError(f"{name}: metadata 'method' is {method!r}, not one of {list(METHODS)}")
    need = ("value.scale", "value.shift") if method == "stylediffusion" else ("null.embeds",)
    missing = [k for k in (*need, "grid.sigmas", "latent.x_T") if k not in tensors]
    if missing:
        raise ArtifactError(f"{name}: a {method} file needs tensors {missing}")
    sigmas, x_T = tensors["grid.sigmas"], tensors["latent.x_T"]
    values = [tensors[k] for k in need]
    T = sigmas.numel() - 1
    if sigmas.ndim != 1 or T < 1 or (sigmas[1:] > sigmas[:-1]).any() or (sigmas < 0).any():
        raise ArtifactError(f"{name}: grid.sigmas must be non-negative, descending noise levels, got "
                            f"{[round(float(s), 4) for s in sigmas.flatten()[:8]]}")
    if any(v.ndim != 3 or v.shape[0] != T or v.shape != values[0].shape for v in values):
        raise ArtifactError(f"{name}: the value tensors {[tuple(v.shape) for v in values]} do not match its {T} "
                            f"steps ([T, L, D] each)")
    if x_T.ndim != 4 or x_T.shape[0] != 1:
        raise ArtifactError(f"{name}: latent.x_T has shape {tuple(x_T.shape)}, not [1, C, h, w]")
    if float(sigmas[0]) <= 0 or (sigmas[1:-1] >= sigmas[:-2]).any():
        raise ArtifactError(f"{name}: grid.sigmas must fall strictly from a positive first level (the last two may be "
                            f"equal), got {[round(float(s), 4) for s in sigmas.flatten()[:8]]}")
    L, D = values[0].shape[1:]
    if L != CHUNK:
        raise ArtifactError(f"{name}: the value tensors hold {L} tokens; an inversion keeps one CLIP chunk of "
                            f"{CHUNK}")
    _check_meta(meta, name, T=T, D=D, shape=list(x_T.shape))


_INTS = ("steps", "ctx_dim", "inner", "seed", "iterations")
_FLOATS = ("guidance", "inner_decay", "lr", "lr_decay", "attn_weight", "final_loss")


def _check_meta(meta: dict, name: str, T: int, D: int, shape: list) -> None:
    """Every metadata field the pack reads or shows parses and agrees with the tensors."""
    for key in _INTS:
        if key in meta and not str(meta[key]).lstrip("-").isdigit():
            raise ArtifactError(f"{name}: metadata {key!r} is {meta[key]!r}, not a whole number")
    for key in _FLOATS:
        if key in meta:
            try:
                ok = math.isfinite(float(meta[key]))
            except ValueError:
                ok = False
            if not ok:
                raise ArtifactError(f"{name}: metadata {key!r} is {meta[key]!r}, not a finite number")
    if "guidance" not in meta:
        raise ArtifactError(f"{name}: metadata 'guidance' (the guidance the inversion holds at) is missing")
    for key, want in (("steps", T), ("ctx_dim", D)):
        if key in meta and int(meta[key]) != want:
            raise ArtifactError(f"{name}: metadata {key!r} says {meta[key]} but the value tensors have {want}")
    if "latent_shape" in meta:
        try:
            said = json.loads(meta["latent_shape"])
        except ValueError:
            said = meta["latent_shape"]
        if said != shape:
            raise ArtifactError(f"{name}: metadata 'latent_shape' says {meta['latent_shape']} but latent.x_T is "
                                f"{shape}")
    check_fingerprint_field(meta, name)


KIND = register(Kind("stylediffusion", "a value-embedding file", FORMAT, _validate,
                     fix="pick a file saved by Value Embedding Save (this one was edited or made elsewhere)"))


def to_tensors(v: ValueEmbedding) -> tuple[dict, dict]:
    tensors = {"grid.sigmas": v.sigmas.double().cpu(), "latent.x_T": v.x_T.float().cpu()}
    if v.method == "stylediffusion":
        tensors.update({"value.scale": v.scale.float().cpu(), "value.shift": v.shift.float().cpu()})
    else:
        tensors["null.embeds"] = v.null.float().cpu()
    return tensors, dict(v.meta, method=v.method)


def from_tensors(tensors: dict, meta: dict) -> ValueEmbedding:
    method = meta["method"]
    kw = ({"scale": tensors["value.scale"], "shift": tensors["value.shift"]} if method == "stylediffusion"
          else {"null": tensors["null.embeds"]})
    return ValueEmbedding(method, tensors["grid.sigmas"].double(), tensors["latent.x_T"].float(),
                          meta={k: v for k, v in meta.items() if k not in ("format", "method")}, **kw)


def tensor_hash(t: torch.Tensor) -> str:
    """A short hash of a conditioning tensor's float32 values (what the file records of c and ∅)."""
    import hashlib
    return hashlib.sha256(t.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
