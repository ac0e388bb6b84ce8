"""h-space direction files (``asyrp_hspace/1``): metadata ``format``, ``kind``, ``family`` (the ComfyUI model class,
e.g. SD15/SDXL), ``channels`` and free-form strings (source prompts, steps, …), and either
- tensors ``delta_h`` [K, C, H, W] float32 and ``sigmas`` [K] float64 (descending noise levels; K = 1 for a global
  direction), metadata ``h_hw``; or
- for ``kind`` = ``implicit`` (a trained f_t): its weights as ``f.<parameter>`` float32 tensors, metadata
  ``temb_dim``, ``train_dt``, ``num_train_steps``, ``t_edit``, the prompts and the training settings.
The direction objects' own file form: ``hooks.directions.to_tensors`` / ``from_tensors``.
"""
from __future__ import annotations

import json

import torch

from . import ArtifactError, Kind, check_fingerprint_field, register

FORMAT = "asyrp_hspace/1"


def _prepare(tensors: dict, meta: dict) -> None:
    if "delta_h" in tensors:
        meta.update(channels=str(tensors["delta_h"].shape[1]), h_hw=json.dumps(list(tensors["delta_h"].shape[2:])))


def _validate(tensors: dict, meta: dict, name: str) -> None:
    check_fingerprint_field(meta, name)
    if meta.get("kind") == "implicit":
        if not any(k.startswith("f.") for k in tensors):
            raise ArtifactError(f"{name} is a trained h-space direction without f.* weights")
        return
    if "delta_h" not in tensors or "sigmas" not in tensors:
        raise ArtifactError(f"{name} is not an h-space direction file: it needs delta_h and sigmas, or f.* weights")
    delta, sigmas = tensors["delta_h"], tensors["sigmas"]
    if delta.ndim != 4 or sigmas.ndim != 1 or sigmas.numel() != delta.shape[0]:
        raise ArtifactError(f"{name} is malformed: delta_h {tuple(delta.shape)}, sigmas {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any() or (sigmas.numel() > 1 and
                                                                   not (sigmas[1:] < sigmas[:-1]).all()):
        raise ArtifactError(f"{name} is malformed: its sigmas must be finite, non-negative noise levels in strictly "
                            f"descending order, got {[round(float(s), 4) for s in sigmas]}")
    if "channels" in meta and meta["channels"] != str(delta.shape[1]):
        raise ArtifactError(f"{name}: metadata 'channels' says {meta['channels']!r} but delta_h has {delta.shape[1]} "
                            f"channels")
    if "h_hw" in meta:
        try:
            hw = json.loads(meta["h_hw"])
        except ValueError:
            hw = meta["h_hw"]
        if hw != list(delta.shape[2:]):
            raise ArtifactError(f"{name}: metadata 'h_hw' says {meta['h_hw']!r} but delta_h is "
                                f"{list(delta.shape[2:])} (h × w)")


KIND = register(Kind("hspace", "an h-space direction file", FORMAT, _validate, _prepare,
                     fix="pick a file saved by h-space Save Direction (this one was edited or made elsewhere)"))
