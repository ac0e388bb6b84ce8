"""Aesthetic heads: a linear head on L2-normalised CLIP image embeddings (the LAION aesthetic predictor v1 form),
tensors ``weight`` [1, D] and ``bias`` [1]; made elsewhere, so no ``format`` metadata is required."""
from __future__ import annotations

from . import ArtifactError, Kind, register


def _validate(tensors: dict, meta: dict, name: str) -> None:
    if "weight" not in tensors or "bias" not in tensors:
        raise ArtifactError(f"{name} needs tensors 'weight' and 'bias' (a linear head); it has {sorted(tensors)}")
    weight = tensors["weight"]
    if tensors["bias"].numel() != 1 or weight.numel() < 1 or weight.ndim not in (1, 2) or (
            weight.ndim == 2 and weight.shape[0] != 1):
        raise ArtifactError(f"{name}: weight {tuple(tensors['weight'].shape)}, bias {tuple(tensors['bias'].shape)}; "
                            f"a head has weight [1, D] and bias [1]")


KIND = register(Kind("aesthetic", "an aesthetic head", None, _validate,
                     fix="use a linear head (weight [1, D], bias [1]) made for the chosen CLIP, saved as safetensors"))
