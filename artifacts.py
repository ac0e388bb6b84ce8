"""The pack's file formats: safetensors with string metadata, validated on load (never pickle).

h-space directions (``asyrp_hspace/1``), metadata ``format``, ``kind``, ``family`` (the ComfyUI model class, e.g.
SD15/SDXL), ``channels`` and free-form strings (source prompts, steps, …), and either
- tensors ``delta_h`` [K, C, H, W] float32 and ``sigmas`` [K] float64 (descending noise levels; K = 1 for a global
  direction), metadata ``h_hw``; or
- for ``kind`` = ``implicit`` (a trained f_t): its weights as ``f.<parameter>`` float32 tensors, metadata
  ``temb_dim``, ``train_dt``, ``num_train_steps``, ``t_edit``, the prompts and the training settings.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

HSPACE_FORMAT = "asyrp_hspace/1"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,120}$")


class ArtifactError(ValueError):
    pass


def safe_file_name(name: str, who: str) -> str:
    """A bare file name (no folders, no '..'), ending in .safetensors."""
    base = name if name.endswith(".safetensors") else name + ".safetensors"
    if not _SAFE_NAME.match(base) or ".." in base:
        raise ArtifactError(f"{who}: unsafe file name {name!r}: use letters, digits, space, '_', '-' and '.', "
                            f"without folders")
    return base


def save_hspace(path: Path, tensors: dict, meta: dict) -> Path:
    """Write atomically (a temporary file, then rename: an interrupted save leaves no half-written file)."""
    from safetensors.torch import save_file
    md = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    md["format"] = HSPACE_FORMAT
    if "delta_h" in tensors:
        md.update(channels=str(tensors["delta_h"].shape[1]), h_hw=json.dumps(list(tensors["delta_h"].shape[2:])))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        save_file(out, str(tmp), metadata=md)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_hspace(path: Path, who: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a validated h-space direction file."""
    from safetensors import safe_open
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{who}: {path.name} is not a .safetensors file (pickled files are refused)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a corrupt or foreign file
        raise ArtifactError(f"{who}: cannot read {path.name} as safetensors: {e}") from None
    implicit = meta.get("kind") == "implicit"
    if meta.get("format") != HSPACE_FORMAT or not (
            any(k.startswith("f.") for k in tensors) if implicit else ("delta_h" in tensors and "sigmas" in tensors)):
        raise ArtifactError(f"{who}: {path.name} is not an h-space direction file (format {meta.get('format')!r}, "
                            f"expected {HSPACE_FORMAT!r} with delta_h and sigmas, or f.* weights)")
    if not implicit:
        delta, sigmas = tensors["delta_h"], tensors["sigmas"]
        if delta.ndim != 4 or sigmas.numel() != delta.shape[0]:
            raise ArtifactError(f"{who}: {path.name} is malformed: delta_h {tuple(delta.shape)}, "
                                f"sigmas {tuple(sigmas.shape)}")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise ArtifactError(f"{who}: {path.name} contains NaN/inf")
    return tensors, meta
