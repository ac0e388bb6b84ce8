"""CASO class-embedding files (``caso_embedding/1``): one file per class, in the layout ComfyUI's own embedding loader
reads (comfy/sd1_clip.py ``load_embed``: a safetensors file whose tensor under the text encoder's key is used), so the
stock CLIPTextEncode uses a trained class as ``embedding:<file name>``. Tensors: ``clip_l`` [n, 768] (SD1.x) and, for
SDXL, ``clip_g`` [n, 1280] as well, float32. Metadata (strings): ``format``, ``class_name``, ``class_index``,
``class_names`` (a JSON list), ``attribute``, ``family``, ``classifier`` (name and sha256), ``te_<key>``
(fingerprints of the text encoders' token tables), ``train`` (JSON: the settings).
"""
from __future__ import annotations

import hashlib
import json

import torch

from ..optim.caso import ClassEmbedding
from . import ArtifactError, Kind, register

FORMAT = "caso_embedding/1"
ENCODER_KEYS = ("clip_l", "clip_h", "clip_g")
# CLIP-L, OpenCLIP-H and OpenCLIP-bigG token widths (SD1.x: l; SD2.x: h; SDXL's two encoders: l and g)
WIDTHS = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280}


def _validate(tensors: dict, meta: dict, name: str) -> None:
    keys = [k for k in tensors if k in ENCODER_KEYS]
    if not keys or set(tensors) - set(ENCODER_KEYS):
        raise ArtifactError(f"{name}: a CASO embedding holds tensors {list(ENCODER_KEYS)} only, it has "
                            f"{sorted(tensors)}")
    shapes = {k: tuple(tensors[k].shape) for k in keys}
    if any(len(s) != 2 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise ArtifactError(f"{name}: its tensors must be [n_tokens, D] with one n_tokens, got {shapes}")
    wrong = {k: s for k, s in shapes.items() if s[1] != WIDTHS[k]}
    if wrong:
        raise ArtifactError(f"{name}: {wrong} do not have their text encoders' widths {WIDTHS}")
    if meta.get("n_tokens") not in (None, str(next(iter(shapes.values()))[0])):
        raise ArtifactError(f"{name}: its tensors hold {next(iter(shapes.values()))[0]} tokens, its metadata says "
                            f"n_tokens {meta['n_tokens']}")
    try:
        names = json.loads(meta.get("class_names", ""))
        index = int(meta.get("class_index", ""))
    except ValueError:
        raise ArtifactError(f"{name}: metadata 'class_names' (a JSON list) and 'class_index' (an integer) are "
                            f"missing or malformed") from None
    if not isinstance(names, list) or not 0 <= index < len(names) or meta.get("class_name") != names[index]:
        raise ArtifactError(f"{name}: class_index {index} / class_name {meta.get('class_name')!r} do not match "
                            f"class_names {names}")


KIND = register(Kind("caso", "a CASO class embedding", FORMAT, _validate,
                     fix="pick a file saved by CASO Save Embedding (this one was edited or made elsewhere)"))


def to_tensors(e: ClassEmbedding) -> tuple[dict, dict]:
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in e.tokens.items()}
    meta = dict(e.meta, class_name=e.name, class_index=str(e.index), n_tokens=str(e.n_tokens))
    return tensors, meta


def from_tensors(tensors: dict, meta: dict) -> ClassEmbedding:
    rest = {k: v for k, v in meta.items() if k not in ("format", "class_name", "class_index", "n_tokens")}
    return ClassEmbedding(meta["class_name"], int(meta["class_index"]), {k: tensors[k] for k in ENCODER_KEYS
                                                                         if k in tensors}, rest)


def fingerprint(token_table: torch.Tensor) -> str:
    """A short sha256 of a text encoder's token-embedding table: a file trained for another encoder is told apart."""
    return hashlib.sha256(token_table.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
