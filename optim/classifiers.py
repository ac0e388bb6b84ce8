"""Image classifiers a user can plug into a DOODL loss, built from a declared architecture and safetensors weights
(never a pickle): the architecture names a constructor here, the file only fills its parameters.

- ``small_cnn``: four stride-2 conv blocks (GroupNorm, SiLU), global pooling, a linear head; input [B, 3, S, S] in
  [0, 1] (it maps to [−1, 1] itself); the shapes world's attribute classifiers are of this kind.
- ``resnet18`` / ``resnet50``: torchvision's, without pretrained weights (the file provides them).
Pure torch (torchvision for the ResNets).
"""
from __future__ import annotations

from torch import nn

ARCHITECTURES = ("small_cnn", "resnet18", "resnet50")
NORMALISATIONS = {  # (mean, std) applied to [0, 1] images after resizing
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class SmallCNN(nn.Module):
    """[B, 3, S, S] in [0, 1] -> logits over ``n_classes`` (~100 k parameters at width 32)."""

    def __init__(self, n_classes: int, width: int = 32):
        super().__init__()
        w = width

        def block(i, o):
            return [nn.Conv2d(i, o, 3, stride=2, padding=1), nn.GroupNorm(8, o), nn.SiLU()]
        self.net = nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w), *block(4 * w, 4 * w),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, n_classes))

    def forward(self, x):
        return self.net(x * 2 - 1)


def build(architecture: str, n_classes: int, width: int = 32) -> nn.Module:
    if architecture == "small_cnn":
        return SmallCNN(n_classes, width)
    if architecture in ("resnet18", "resnet50"):
        import torchvision
        return getattr(torchvision.models, architecture)(weights=None, num_classes=n_classes)
    raise ValueError(f"unknown classifier architecture {architecture!r}; supported: {', '.join(ARCHITECTURES)}")


def load(path, architecture: str, n_classes: int | None = None) -> tuple[nn.Module, list[str]]:
    """(model in eval mode, class names) from a safetensors file; the class list comes from the file's ``classes``
    metadata (a JSON list) or, failing that, ``n_classes`` numbered classes. Raises ValueError with the mismatch."""
    import json
    from pathlib import Path
    from safetensors import safe_open
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors file (pickled classifiers are refused)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as e:
        raise ValueError(f"cannot read {path.name} as safetensors: {e}") from None
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(int(n_classes or 0))]
    if not classes:
        raise ValueError(f"{path.name} has no 'classes' metadata; give the number of classes")
    model = build(architecture, len(classes), int(meta.get("width", 32)))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path.name} does not fit a {architecture} with {len(classes)} classes: "
                         f"{str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False), classes
