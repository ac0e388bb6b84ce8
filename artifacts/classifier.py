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
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ArtifactError(f"{name}: metadata 'classes' must be a JSON list of names, got {meta['classes']!r}")


KIND = register(Kind("classifier", "an image classifier", None, _validate))


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
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as e:
        raise ArtifactError(f"{who}: {path.name} does not fit a {architecture} with {len(classes)} classes: "
                            f"{str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False), classes
