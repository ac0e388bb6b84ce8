"""Image classifiers a user can plug into a pixel loss, built from a declared architecture and safetensors weights
(never a pickle; the file is read by ``artifacts.classifier``): the architecture names a constructor here, the file
only fills its parameters.

- ``small_cnn``: four stride-2 conv blocks (GroupNorm, SiLU), global pooling, a linear head; input [B, 3, S, S] in
  [0, 1] (it maps to [−1, 1] itself); the shapes world's attribute classifiers are of this kind.
- ``resnet18`` / ``resnet50``: torchvision's, without pretrained weights (the file provides them).
Pure torch (torchvision for the ResNets).
"""
from __future__ import annotations

from torch import nn

from ..errors import quote
from .clip import OPENAI_MEAN, OPENAI_STD

ARCHITECTURES = ("small_cnn", "resnet18", "resnet50")
NORMALISATIONS = {  # (mean, std) applied to [0, 1] images after resizing
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": (OPENAI_MEAN, OPENAI_STD),
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


def class_index(classes: list[str], target: str) -> int:
    """The index of ``target`` in ``classes``: a class name, or an index written as digits."""
    t = target.strip()
    if t in classes:
        return classes.index(t)
    if t.isdigit() and int(t) < len(classes):
        return int(t)
    shown = ", ".join(classes[:20]) + (f", … ({len(classes)} classes)" if len(classes) > 20 else "")
    raise ValueError(f"target {quote(target)} is not one of the classifier's classes ({quote(shown, 300)}); type one "
                     f"of those names in target, or an index 0 … {len(classes) - 1}")


class ImageClassifier:
    """The one classifier interface of the pack's gradient loops: ``logits(images)`` [B, K] of images [B, 3, H, W] in
    [0, 1] (differentiable in them), ``class_names`` K. Built from a network with its input normalisation
    (``NORMALISATIONS``) or from a CLIP with class prompts (``zero_shot``)."""

    def __init__(self, logits_fn, class_names: list, description: str = ""):
        self._logits, self.class_names, self.description = logits_fn, list(class_names), description

    def logits(self, images):
        return self._logits(images)

    @classmethod
    def network(cls, model: nn.Module, class_names: list, normalisation: str = "none", description: str = ""):
        import torch
        norm = NORMALISATIONS[normalisation]

        def logits(images):
            p = next(model.parameters())
            x = images.to(p.device, p.dtype)
            if norm is not None:
                mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) for v in norm)
                x = (x - mean) / std
            return model(x).float()
        return cls(logits, class_names, description)

    @classmethod
    def zero_shot(cls, clip, prompts: list, class_names: list | None = None, scale: float = 100.0,
                  description: str = ""):
        """CLIP zero-shot: scale·cos(E_I(image), E_T(prompt_k)) (``clip``: ``losses.clip.LocalCLIP``)."""
        text = clip.text_features(list(prompts))

        def logits(images):
            return scale * clip.image_features(images) @ text.to(clip.device).T
        return cls(logits, class_names or list(prompts), description)

    @classmethod
    def linear_probe(cls, encoder, weight, bias, class_names: list, description: str = ""):
        """A linear head on an image encoder's features: W·E_I(image) + b (``encoder.image_features``: e.g.
        ``adapters.clip.ComfyCLIPVision``, L2-normalised; W [K, D], b [K] from ``fit_linear_probe``)."""
        def logits(images):
            f = encoder.image_features(images)
            return f @ weight.to(f.device, f.dtype).T + bias.to(f.device, f.dtype)
        return cls(logits, class_names, description)


def fit_linear_probe(features, labels, n_classes: int, steps: int = 300, lr: float = 0.1,
                     weight_decay: float = 1e-3):
    """Multinomial logistic regression on fixed features: (W [K, D], b [K]) minimising
    mean_i CE(W̃·f̃_i + b̃, y_i) + (weight_decay / 2)·||W̃||² over the standardised features f̃ = (f − μ) / s (per
    dimension over the examples; a tower's embedding directions differ by orders of magnitude), full batch, Adam from
    zero (deterministic: no sampling), folded back to the raw features: W = W̃ / s, b = b̃ − W·μ.
    Returns (W, b, training accuracy)."""
    import torch
    f = features.detach().float()
    mu, sd = f.mean(0), f.std(0, unbiased=False).clamp(min=1e-6)
    z = (f - mu) / sd
    y = torch.as_tensor(labels, dtype=torch.long, device=f.device)
    w = torch.zeros(n_classes, f.shape[1], device=f.device, requires_grad=True)
    b = torch.zeros(n_classes, device=f.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(int(steps)):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + 0.5 * weight_decay * (w ** 2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        weight = w / sd
        bias = b - weight @ mu
        acc = float(((f @ weight.T + bias).argmax(1) == y).float().mean())
    return weight, bias, acc
