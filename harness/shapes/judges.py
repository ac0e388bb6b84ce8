"""The shapes world's judges of an edit, one definition for the scorecard (bench/scorecard.py) and the demo report
(harness/demo.py): did the attribute change, did the shape, the position and the background stay.

- colour / shape: the attribute classifiers' labels and probabilities (harness/shapes/models.py);
- centre shift and area ratio of the object: the coloured region (``data.shape_centroid``) of the edit against the
  source's;
- background PSNR: over the pixels outside the source object (its procedural mask when the labels are known, else its
  coloured region), grown by 2 px so that anti-aliased edges do not count.
Pure torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from .models import load_classifier

GROW_PX = 2


@dataclass
class Verdict:
    colour: str
    p_colour: float
    shape: str
    p_shape: float
    shift_px: float = math.nan
    area_ratio: float = math.nan
    background_psnr_db: float = math.nan

    def describe(self) -> str:
        text = f"colour: {self.colour} (p {self.p_colour:.2f}), shape: {self.shape} (p {self.p_shape:.2f})"
        if math.isfinite(self.background_psnr_db):
            text += f", background PSNR {self.background_psnr_db:.1f} dB"
        if math.isfinite(self.shift_px):
            text += f", centre shift {self.shift_px:.1f} px, area ×{self.area_ratio:.2f}"
        return text


def background_mask(source: torch.Tensor, labels: data.Batch | None = None) -> torch.Tensor:
    """[B, 1, H, W] 1 where the pixel is background in the source (object grown by GROW_PX)."""
    if labels is not None:
        obj = data.shape_mask(labels.shape, labels.radius, labels.cx, labels.cy)[:, None]
    else:
        obj = ((source.max(1).values - source.min(1).values) > 0.3).float()[:, None]
    grown = F.max_pool2d((obj > 1e-3).float(), 2 * GROW_PX + 1, stride=1, padding=GROW_PX)
    return 1.0 - grown


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR per image over the pixels where ``mask`` is 1 (images in [0, 1])."""
    se = ((a - b) ** 2 * mask).sum((1, 2, 3))
    n = (mask.sum((1, 2, 3)) * a.shape[1]).clamp(min=1)
    return 10 * torch.log10(1.0 / (se / n).clamp(min=1e-12))


class Judges:
    """The colour and shape classifiers of the shapes world, from its model folder."""

    def __init__(self, classifier_dir: Path, files: tuple[str, str]):
        self.colour, _ = load_classifier(classifier_dir / files[0])
        self.shape, _ = load_classifier(classifier_dir / files[1])

    @torch.no_grad()
    def labels(self, images: torch.Tensor) -> dict:
        """{"colour", "shape"}: (index [B], probability [B]) of each classifier's top class."""
        out = {}
        for name, clf in (("colour", self.colour), ("shape", self.shape)):
            p = clf(images.float()).softmax(1)
            conf, idx = p.max(1)
            out[name] = (idx, conf, p)
        return out

    @torch.no_grad()
    def judge(self, edited: torch.Tensor, source: torch.Tensor | None = None,
              labels: data.Batch | None = None) -> list[Verdict]:
        """One verdict per image of ``edited`` [B, 3, H, W] in [0, 1]; with ``source`` also the object's centre
        shift, area ratio and the background PSNR (outside the source object)."""
        lab = self.labels(edited)
        verdicts = []
        if source is not None:
            (c0, a0), (c1, a1) = data.shape_centroid(source), data.shape_centroid(edited)
            shift = (c1 - c0).norm(dim=1)
            ratio = a1 / a0.clamp(min=1)
            bg = masked_psnr(edited, source, background_mask(source, labels))
        for i in range(edited.shape[0]):
            v = Verdict(data.COLOURS[int(lab["colour"][0][i])], float(lab["colour"][1][i]),
                        data.SHAPES[int(lab["shape"][0][i])], float(lab["shape"][1][i]))
            if source is not None:
                v.shift_px, v.area_ratio, v.background_psnr_db = float(shift[i]), float(ratio[i]), float(bg[i])
            verdicts.append(v)
        return verdicts
