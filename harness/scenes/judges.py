"""The scenes world's judges: the scene judge (a small fully convolutional network that finds the objects and
names their attributes, the background texture and the style) and a toy CLIP at 128 px that reads object and
background words. Pure torch + transformers; trained by harness/scenes/train.py (stages ``judge``, ``clip``).

The scene judge answers, per image: the objects (a connected region of its objectness map, each with colour, shape,
size by the mean of its pixels' class probabilities, centre and area), sorted left to right as captions name them,
and the texture and style; ``compare`` scores that against a Scene or a caption's attributes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data

CELL = 4                     # the judge's per-pixel maps are 32×32: one cell per 4×4 pixels
HEADS = {"colour": data.COLOURS, "shape": data.SHAPES, "size": data.SIZES}
GLOBAL = {"texture": data.TEXTURES, "style": data.STYLES}


def _block(cin, cout, stride=1):
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1), torch.nn.GroupNorm(8, cout), torch.nn.SiLU())


class SceneJudge(torch.nn.Module):
    """128 px image in [0, 1] → 32×32 maps (objectness logit; colour, shape, size logits) and global logits
    (texture, style). A small U-shaped CNN: features at 1/4, 1/8, 1/16 resolution, the deepest (receptive field
    > the largest object) upsampled back to 1/4; the global heads (texture, style) are a small classifier of their
    own on the pixels."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = torch.nn.Sequential(_block(3, w, 2), _block(w, w, 2), _block(w, w))              # 32×32
        self.down1 = torch.nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))                  # 16×16
        self.down2 = torch.nn.Sequential(_block(2 * w, 3 * w, 2), _block(3 * w, 3 * w), _block(3 * w, 3 * w))  # 8×8
        self.up = torch.nn.Sequential(_block(w + 2 * w + 3 * w, 2 * w), _block(2 * w, 2 * w))
        self.pixel = torch.nn.Conv2d(2 * w, 1 + sum(len(v) for v in HEADS.values()), 1)
        # texture and style: a classifier of its own from the pixels (the pack's small_cnn layout: shared features
        # with the object maps did not learn the texture, 37 % after 1000 steps; this learns it in a few hundred)
        self.glob = torch.nn.Sequential(_block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
                                        _block(4 * w, 4 * w, 2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(4 * w, sum(len(v) for v in GLOBAL.values())))

    def forward(self, x: torch.Tensor) -> dict:
        x = x * 2 - 1
        a = self.stem(x)
        b = self.down1(a)
        c = self.down2(b)
        u = torch.cat([a, F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False),
                       F.interpolate(c, size=a.shape[-2:], mode="bilinear", align_corners=False)], 1)
        p = self.pixel(self.up(u))
        out = {"object": p[:, 0]}
        i = 1
        for name, classes in HEADS.items():
            out[name] = p[:, i:i + len(classes)]
            i += len(classes)
        gl = self.glob(x)
        i = 0
        for name, classes in GLOBAL.items():
            out[name] = gl[:, i:i + len(classes)]
            i += len(classes)
        return out


def targets(scene: data.Scene) -> dict:
    """Per-cell targets at 32×32 from the generator's masks: objectness (1 if an object covers ≥ half the cell,
    0 if < 10 %, ignored between), each attribute of the covering object (ignored off objects), global labels."""
    cov = data.object_masks(scene)                       # [B, 3, 128, 128]
    cell = F.avg_pool2d(cov, CELL)                        # [B, 3, 32, 32]
    total = cell.sum(1)
    which = cell.argmax(1)                                # [B, 32, 32]
    obj = torch.full_like(total, -1.0)
    obj[total >= 0.5] = 1.0
    obj[total < 0.1] = 0.0
    out = {"object": obj}
    on = total >= 0.5
    for name in HEADS:
        lab = getattr(scene, name).gather(1, which.flatten(1)).view_as(which)
        out[name] = torch.where(on, lab, torch.full_like(lab, -100))
    out["texture"] = scene.texture
    out["style"] = scene.style
    return out


def judge_loss(pred: dict, tgt: dict) -> torch.Tensor:
    m = tgt["object"] >= 0
    loss = F.binary_cross_entropy_with_logits(pred["object"][m], tgt["object"][m])
    for name in HEADS:
        loss = loss + F.cross_entropy(pred[name], tgt[name], ignore_index=-100)
    for name in GLOBAL:
        loss = loss + 0.5 * F.cross_entropy(pred[name], tgt[name])
    return loss


def _components(mask: torch.Tensor, iters: int = 64) -> torch.Tensor:
    """4-connected component labels of a [H, W] bool mask (0: background; labels are cell indices + 1)."""
    h, w = mask.shape
    lab = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(h, w))
    for _ in range(iters):
        cross = torch.stack([lab, F.pad(lab, (1, 0))[:, :-1], F.pad(lab, (0, 1))[:, 1:],
                             F.pad(lab, (0, 0, 1, 0))[:-1], F.pad(lab, (0, 0, 0, 1))[1:]]).amax(0)
        new = torch.where(mask, cross, lab)
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


@dataclass
class Verdict:
    objects: list[dict]      # left to right: colour, shape, size (names), cx, cy (px), area (px²), confidence
    texture: str
    style: str


@torch.no_grad()
def read(judge: SceneJudge, images: torch.Tensor, min_cells: int = 3) -> list[Verdict]:
    """What the judge sees in [B, 3, 128, 128] images in [0, 1]."""
    pred = judge(images.clamp(0, 1))
    objp = torch.sigmoid(pred["object"])
    out = []
    for i in range(images.shape[0]):
        lab = _components(objp[i] > 0.5)
        objs = []
        for k in lab.unique().tolist():
            if k == 0:
                continue
            m = lab == k
            if int(m.sum()) < min_cells:
                continue
            wgt = objp[i][m]
            o = {}
            for name, classes in HEADS.items():
                prob = (pred[name][i].softmax(0)[:, m] * wgt).sum(1) / wgt.sum()
                o[name] = classes[int(prob.argmax())]
                o[name + "_p"] = float(prob.max())
            ys, xs = torch.nonzero(m, as_tuple=True)
            o["cx"] = float((xs.float() + 0.5).mean() * CELL)
            o["cy"] = float((ys.float() + 0.5).mean() * CELL)
            o["area"] = float(m.sum() * CELL * CELL)
            objs.append(o)
        objs.sort(key=lambda o: o["cx"])
        out.append(Verdict(objs, data.TEXTURES[int(pred["texture"][i].argmax())],
                           data.STYLES[int(pred["style"][i].argmax())]))
    return out


def expected(scene: data.Scene, i: int) -> Verdict:
    return Verdict(scene.objects(i), data.TEXTURES[int(scene.texture[i])], data.STYLES[int(scene.style[i])])


def compare(seen: Verdict, want: Verdict) -> dict:
    """Per attribute: 1.0 right, 0.0 wrong. ``count``: the number of objects; colour / shape / size: the fraction
    of wanted objects matched in left-to-right order (only when the count is right, else 0); texture; style;
    ``all``: everything right."""
    r = {"count": float(len(seen.objects) == len(want.objects)), "texture": float(seen.texture == want.texture),
         "style": float(seen.style == want.style)}
    for name in HEADS:
        if r["count"] and want.objects:
            r[name] = sum(a[name] == b[name] for a, b in zip(seen.objects, want.objects)) / len(want.objects)
        else:
            r[name] = 0.0
    r["all"] = float(all(v == 1.0 for v in r.values()))
    return r


def save_judge(model: SceneJudge, path: Path, meta: dict) -> None:
    from ..shapes.train import save
    save(model.state_dict(), path.name, {**meta, "heads": json.dumps({k: list(v) for k, v in HEADS.items()}),
                                         "global": json.dumps({k: list(v) for k, v in GLOBAL.items()})},
         folder=path.parent)


def load_judge(path: str | Path) -> SceneJudge:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    m = SceneJudge(int(meta.get("width", 32)))
    m.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return m.eval()


# --- toy CLIP ----------------------------------------------------------------------------------------------------

WORDS = ["a", "an", "the", "photo", "picture", "of", "shape", "object", "image", "and", "on", "at", "background",
         "night", "pastel", "ringed", *data.COLOURS, *data.SHAPES, *data.SIZES, *data.TEXTURES]
CLIP_TOKENS = 40


def toy_clip_config():
    from transformers import CLIPConfig
    from ..shapes.models import toy_tokenizer_files
    vocab, _ = toy_tokenizer_files(WORDS)
    return CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=CLIP_TOKENS,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=data.SIZE, patch_size=16, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=4, num_attention_heads=4),
        projection_dim=64)
