"""Pixel losses: differentiable losses on decoded images [B, 3, H, W] in [0, 1], one interface for every method that
optimises through the decoder (DOODL now; CASO and h-space training later): ``loss(images01, generator) -> scalar``
(the batch mean) and ``loss.per_image(images01, generator) -> [B]`` (each image's own: DOODL optimises the images of
a batch independently), carried between nodes on one socket type (``nodes.sockets.PixelLoss``).

- ``CLIPLoss``: the DOODL / CLIP-guidance spherical distance to a text or reference-image embedding;
- ``ClassifierLoss``: cross-entropy (or minus the logit) of an image classifier to a target class;
- ``AestheticLoss``: a linear aesthetic head on CLIP embeddings (the LAION predictor v1 form);
- ``WeightedSum``: Σ w_i·L_i.
Each reduces over DOODL's random multi-crops (``multicrop``), drawn from the caller's generator. Pure torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .clip import LocalCLIP


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """d(u, v) = 2·arcsin(‖û − v̂‖/2)² on L2-normalised embeddings (the DOODL / CLIP-guidance distance: 0 for equal
    directions, π²/2 for opposite ones), per row."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return 2 * torch.arcsin(((a - b).norm(dim=-1) / 2).clamp(max=1.0)) ** 2


def multicrop(images: Tensor, n: int, size: int, power: float, generator: torch.Generator | None = None) -> Tensor:
    """DOODL's MultiCrop: n random square crops of [B, 3, H, W] images, each side s = int(u^power·(S − s_min) + s_min)
    with u ~ U(0, 1), S = min(H, W), s_min = min(S, size), at a random position, average-pooled to size×size
    (power < 1 favours large crops). Returns [n·B, 3, size, size]; n = 0 gives the whole image resized."""
    h, w = images.shape[-2:]
    if n <= 0:
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    big, small = min(h, w), min(h, w, size)
    out = []
    for _ in range(n):
        u = float(torch.rand((), generator=generator))
        s = int(u ** power * (big - small) + small)
        top = int(torch.randint(0, h - s + 1, (), generator=generator))
        left = int(torch.randint(0, w - s + 1, (), generator=generator))
        crop = images[..., top:top + s, left:left + s]
        out.append(F.adaptive_avg_pool2d(crop, size) if s >= size else
                   F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(out)


class PixelLoss:
    """A differentiable loss on decoded images [B, 3, H, W] in [0, 1]: ``weight · reduce over crops (score)``.
    Subclasses give ``per_crop(crops) -> [n·B]``; ``__call__(images, generator)`` returns a scalar."""

    def __init__(self, weight: float = 1.0, crops: int = 16, crop_power: float = 0.3, crop_size: int = 224,
                 reduction: str = "mean"):
        if reduction not in ("mean", "min"):
            raise ValueError(f"reduction must be mean or min, got {reduction!r}")
        self.weight, self.crops, self.crop_power = float(weight), int(crops), float(crop_power)
        self.crop_size, self.reduction = int(crop_size), reduction

    def per_crop(self, crops: Tensor) -> Tensor:
        raise NotImplementedError

    def per_image(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B]: each image's loss (the crops are drawn once for the batch: an image scores alike alone)."""
        crops = multicrop(images, self.crops, self.crop_size, self.crop_power, generator)
        v = self.per_crop(crops).view(max(1, self.crops), images.shape[0])
        v = v.min(dim=0).values if self.reduction == "min" else v.mean(dim=0)
        return self.weight * v

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.per_image(images, generator).mean()


class CLIPLoss(PixelLoss):
    """Spherical distance between CLIP image embeddings of the crops and a target embedding: a text's, or the
    renormalised mean of reference images' (DOODL Sec. 4; the official code reduces over crops with min)."""

    def __init__(self, clip: LocalCLIP, target: Tensor, **kw):
        kw.setdefault("crop_size", clip.size)
        super().__init__(**kw)
        self.clip, self.target = clip, F.normalize(target.float().flatten()[None], dim=-1)

    @classmethod
    def from_text(cls, clip: LocalCLIP, text: str, **kw) -> "CLIPLoss":
        return cls(clip, clip.text_features([text])[0], **kw)

    @classmethod
    def from_images(cls, clip: LocalCLIP, images: Tensor, **kw) -> "CLIPLoss":
        with torch.no_grad():
            return cls(clip, clip.image_features(images).mean(0), **kw)

    def per_crop(self, crops: Tensor) -> Tensor:
        feats = self.clip.image_features(crops)
        return spherical_distance(feats, self.target.to(feats.device).expand_as(feats))


class ClassifierLoss(PixelLoss):
    """Cross-entropy of a classifier's logits on the crops to ``target`` (``mode="logit"``: minus the target's
    logit). ``mean``/``std`` normalise the [0, 1] crops first (None: the classifier takes [0, 1])."""

    def __init__(self, model: torch.nn.Module, target: int, mean=None, std=None, mode: str = "cross_entropy", **kw):
        super().__init__(**kw)
        self.model, self.target, self.mode = model, int(target), mode
        self.mean = None if mean is None else torch.tensor(mean).view(1, 3, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, 3, 1, 1)

    def per_crop(self, crops: Tensor) -> Tensor:
        p = next(self.model.parameters())
        x = crops.to(p.device, p.dtype)
        if self.mean is not None:
            x = (x - self.mean.to(x)) / self.std.to(x)
        logits = self.model(x).float()
        if self.mode == "logit":
            return -logits[:, self.target]
        return F.cross_entropy(logits, torch.full((logits.shape[0],), self.target, device=logits.device),
                               reduction="none")


class WeightedSum:
    """Σ_i w_i·L_i(images) of pixel losses (each already carries its own weight)."""

    def __init__(self, terms: list):
        self.terms = list(terms)

    def per_image(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sum(w * per_image(loss, images, generator) for loss, w in self.terms)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sum(w * loss(images, generator) for loss, w in self.terms)


def per_image(loss, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A loss's per-image values [B] (a loss without ``per_image`` gives one value for the batch: a 0-d tensor)."""
    return loss.per_image(images, generator) if hasattr(loss, "per_image") else loss(images, generator)


class AestheticLoss(PixelLoss):
    """A linear aesthetic head on L2-normalised CLIP image embeddings (the LAION aesthetic predictor v1 form):
    score = w·ê + b, clipped to [1, 10]; loss = |score − target|, or −score when target is 0 (maximise)."""

    def __init__(self, clip: LocalCLIP, weight_vec: Tensor, bias: Tensor, target: float = 10.0, **kw):
        kw.setdefault("crop_size", clip.size)
        super().__init__(**kw)
        self.clip, self.target = clip, float(target)
        self.w, self.b = weight_vec.float().flatten(), bias.float().flatten()
        dim = getattr(clip, "dim", None)  # known before the first image for a LocalCLIP
        if dim is not None and dim != self.w.numel():
            raise ValueError(f"the aesthetic head takes {self.w.numel()}-d embeddings, this CLIP gives {dim}; use the "
                             f"head made for this CLIP")

    def per_crop(self, crops: Tensor) -> Tensor:
        feats = self.clip.image_features(crops)
        if feats.shape[-1] != self.w.numel():
            raise ValueError(f"the aesthetic head takes {self.w.numel()}-d embeddings, this CLIP gives "
                             f"{feats.shape[-1]}; use the head made for this CLIP")
        score = (feats @ self.w.to(feats.device) + self.b.to(feats.device)).clamp(1.0, 10.0)
        return -score if self.target == 0 else (score - self.target).abs()
