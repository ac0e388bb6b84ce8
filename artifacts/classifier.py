"""Image classifiers for the pixel losses: a safetensors state dict of a declared architecture
(``losses.classifiers.ARCHITECTURES``; the file only fills its parameters, it never names code), with optional
metadata ``classes`` (a JSON list of names) and ``width`` (small_cnn). Made elsewhere: no ``format`` required."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..losses.classifiers import build
from . import ArtifactError, Kind, load, register


def _validate(tensors: dict, meta: dict, name: str) -> None:
    if "classes" in meta:
        try:
            classes = json.loads(meta["classes"])
        except json.JSONDecodeError:
            classes = None
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ArtifactError(f"{name}: metadata 'classes' must be a JSON list of class names such as "
                                f'["red", "blue"], got {meta["classes"]!r}')


KIND = register(Kind("classifier", "an image classifier", None, _validate,
                     fix="use a state dict saved with safetensors.torch.save_file from the declared architecture"))


def load_classifier(path, architecture: str, n_classes: int | None, who: str) -> tuple[nn.Module, list[str]]:
    """(model in eval mode, class names) from a classifier file; the classes come from its ``classes`` metadata or,
    failing that, ``n_classes`` numbered classes. Raises ArtifactError with the mismatch."""
    path = Path(path)
    tensors, meta = load(path, "classifier", who)
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(int(n_classes or 0))]
    if not classes:
        raise ArtifactError(f"{who}: {path.name} has no 'classes' metadata; give the number of classes")
    try:
        model = build(architecture, len(classes), int(meta.get("width", 32)))
    except ValueError as e:
        raise ArtifactError(f"{who}: {e}") from None
    mismatch = state_dict_mismatch(model.state_dict(), tensors)
    if mismatch:
        raise ArtifactError(f"{who}: {path.name} does not fit a {architecture} with {len(classes)} classes: "
                            f"{mismatch}; pick the architecture (and width metadata) the weights were saved from")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval().requires_grad_(False), classes


def state_dict_mismatch(expected: dict, got: dict, most: int = 4) -> str:
    """What differs between a network's state dict and a file's tensors ('' when they fit): missing and unexpected
    keys and shape mismatches, the first few of each by name."""
    def few(names):
        names = sorted(names)
        return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    missing = set(expected) - set(got)
    unexpected = set(got) - set(expected)
    shapes = [f"{k} {tuple(got[k].shape)} (wants {tuple(expected[k].shape)})" for k in sorted(set(expected) & set(got))
              if tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({few(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({', '.join(shapes[:most])}"
                     + (f" and {len(shapes) - most} more" if len(shapes) > most else "") + ")")
    return "; ".join(parts)
