"""The pack's files: safetensors with string metadata, validated on load, never pickle. One path for every kind:

- ``safe_file_name``: a bare name for a file the pack writes (no folders, no traversal);
- ``save(path, kind, tensors, meta)``: atomic (a temporary file, then rename: an interrupted save leaves no
  half-written file), with the kind's ``format`` metadata;
- ``read(path, who)``: the one reader (refuses anything but ``.safetensors``; a corrupt or foreign file gives an
  error naming it);
- ``load(path, kind, who)``: ``read`` + the kind's validation (naming the mismatch) + a NaN/inf check.

``REGISTRY`` maps each kind to its format and validation; one module per kind: ``hspace`` (h-space directions),
``classifier`` (user image classifiers for the pixel losses), ``aesthetic`` (linear aesthetic heads). Pure torch +
safetensors; no ComfyUI.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import InvEditError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
MAX_NAME = 120


class ArtifactError(InvEditError):
    pass


@dataclass(frozen=True)
class Kind:
    """A kind of file: ``title`` names it in messages; ``format`` is the metadata value the pack writes and requires (None for files made elsewhere,
    such as a user's classifier); ``validate(tensors, meta, name)`` raises ArtifactError naming the mismatch;
    ``prepare(tensors, meta)`` adds derived metadata before a save; ``fix`` ends every refusal of a file of this
    kind: what to give instead."""
    name: str
    title: str                 # what the file is, for messages: "an h-space direction file"
    format: Optional[str]
    validate: Callable[[dict, dict, str], None]
    prepare: Optional[Callable[[dict, dict], None]] = None
    fix: str = "replace it with a valid file"


REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    REGISTRY[kind.name] = kind
    return kind


def safe_file_name(name: str, who: str) -> str:
    """A bare file name (no folders, no '..'), ending in .safetensors; a refusal says what is wrong."""
    stem = name[:-len(".safetensors")] if name.endswith(".safetensors") else name
    allowed = "use ASCII letters, digits, space, '_', '-' and '.'"
    if not stem.strip():
        raise ArtifactError(f"{who}: unsafe file name: the name is empty; give a name such as my_direction")
    if "/" in stem or "\\" in stem or ".." in stem or ":" in stem:
        raise ArtifactError(f"{who}: unsafe file name {name!r}: no folder parts ('/', '\\', '..', ':'); the file "
                            f"goes into the pack's model folder, give a bare name")
    if len(stem) > MAX_NAME:
        raise ArtifactError(f"{who}: unsafe file name: too long ({len(stem)} characters, at most {MAX_NAME}); give a "
                            f"shorter name")
    bad = sorted({c for c in stem if ord(c) > 127})
    if bad:
        raise ArtifactError(f"{who}: unsafe file name {name!r}: non-ASCII characters {''.join(bad)!r}; {allowed}")
    if not _SAFE_NAME.match(stem):
        why = "starts with" if not stem[0].isalnum() else "contains"
        raise ArtifactError(f"{who}: unsafe file name {name!r}: it {why} a character that is not allowed; {allowed} "
                            f"(starting with a letter or digit)")
    return stem + ".safetensors"


def free_path(folder: Path, file_name: str) -> Path:
    """``folder / file_name``, or, when that exists, the first free ``<stem>_00001<suffix>``, ``_00002``, … (ComfyUI's
    counter convention): a save never overwrites a file."""
    folder = Path(folder)
    path = folder / file_name
    stem, suffix = path.stem, path.suffix
    k = 0
    while path.exists():
        k += 1
        path = folder / f"{stem}_{k:05d}{suffix}"
    return path


def save(path: Path, kind: str, tensors: dict, meta: dict) -> Path:
    """Write ``tensors`` with ``meta`` (values that are not strings are stored as JSON) and the kind's format,
    atomically."""
    from safetensors.torch import save_file
    k = REGISTRY[kind]
    md = {key: (v if isinstance(v, str) else json.dumps(v)) for key, v in meta.items()}
    if k.format is not None:
        md["format"] = k.format
    if k.prepare is not None:
        k.prepare(tensors, md)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out = {key: v.detach().contiguous().cpu() for key, v in tensors.items()}
    try:
        save_file(out, str(tmp), metadata=md)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


PICKLE_CONVERT = "convert it on a machine you trust (torch.load, then safetensors.torch.save_file)"


def is_pickle(path: Path) -> bool:
    """Whether a file starts like a pickle: torch.save's zip archive, or a bare pickle (protocol 2+). Only the first
    bytes are read; nothing is unpickled."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read(path: Path, who: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file, unvalidated. A pickle (even renamed to .safetensors) is refused
    without being unpickled."""
    from safetensors import safe_open
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{who}: {path.name} is not a .safetensors file (pickled files are refused); "
                            f"{PICKLE_CONVERT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a corrupt, truncated or foreign file
        if is_pickle(path):
            raise ArtifactError(f"{who}: {path.name} is a pickle (a torch.save or .ckpt file renamed to "
                                f".safetensors); pickles are never loaded: {PICKLE_CONVERT}") from None
        raise ArtifactError(f"{who}: cannot read {path.name} as safetensors ({e}): the file is cut short or not "
                            f"safetensors; replace it with a complete copy") from None
    return tensors, meta


def check_fingerprint_field(meta: dict, name: str) -> None:
    """The ``model_fingerprint`` a file may hold (adapters.fingerprint: a JSON object of strings) parses."""
    if "model_fingerprint" not in meta:
        return
    try:
        fp = json.loads(meta["model_fingerprint"])
    except ValueError:
        fp = None
    if not isinstance(fp, dict) or not all(isinstance(v, str) for v in fp.values()):
        raise ArtifactError(f"{name}: metadata 'model_fingerprint' is {meta['model_fingerprint'][:60]!r}, not the "
                            f"model fingerprint the pack writes")


def load(path: Path, kind: str, who: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a validated file of ``kind``."""
    k = REGISTRY[kind]
    path = Path(path)
    tensors, meta = read(path, who)
    if k.format is not None and meta.get("format") != k.format:
        raise ArtifactError(f"{who}: {path.name} is not {k.title} (format {meta.get('format')!r}, expected "
                            f"{k.format!r}); {k.fix}")
    try:
        k.validate(tensors, meta, path.name)
    except ArtifactError as e:
        raise ArtifactError(f"{who}: {e}; {k.fix}") from None
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise ArtifactError(f"{who}: {path.name} contains NaN/inf; {k.fix}")
    return tensors, meta


from . import aesthetic, caso, classifier, hspace, stylediffusion  # noqa: E402,F401  (each registers its kind)
