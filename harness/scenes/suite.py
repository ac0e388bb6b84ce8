"""A PIE-Bench-style edit suite on the scenes world: fixed held-out cases, each a source image with its source
prompt, a target prompt, the edit mask and the edit type, plus what PIE-Bench cannot give: the target scene rendered
by the generator (so attribute success is judged against known labels).

Edit types (EDIT_TYPES), in PIE-Bench's terms:
- ``colour``  change one object's colour among two or three objects (mask: that object);
- ``shape``   change one object's shape (mask: the object before and after);
- ``size``    small ↔ large for one object (mask: before and after);
- ``add``     add an object (mask: the new object);
- ``remove``  remove one object of two or three (mask: the removed object);
- ``texture`` change the background texture (mask: the background, i.e. everything but the objects' interiors);
- ``style``   change the global style / palette: normal → pastel or at night (mask: the whole image).
Object masks are the generator's coverage > 0.1, grown by 2 px.

Splits: ``tune`` (seeds from TUNE_SEED) for choosing each method's settings, ``test`` (seeds from TEST_SEED) for
the reported tables; neither is used by any training stage (harness/scenes/data.py TRAIN_SEED 101, HELDOUT 102).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data

EDIT_TYPES = ("colour", "shape", "size", "add", "remove", "texture", "style")
TUNE_SEED, TEST_SEED = 271, 314


@dataclass
class Case:
    kind: str
    source: data.Scene       # one scene
    target: data.Scene       # the same scene edited
    source_prompt: str
    target_prompt: str
    mask: torch.Tensor       # [128, 128] bool: where the edit may change pixels
    obj: int                 # index (left to right) of the edited object: in the target, in the source for remove
                             # (-1: texture, style)

    @property
    def source_image(self) -> torch.Tensor:
        return data.render(self.source)[0]

    @property
    def target_image(self) -> torch.Tensor:
        return data.render(self.target)[0]


def _grow(m: torch.Tensor, px: int = 2) -> torch.Tensor:
    return F.max_pool2d(m.float()[None, None], 2 * px + 1, 1, px)[0, 0] > 0


def _obj_mask(scene: data.Scene, k: int) -> torch.Tensor:
    return data.object_masks(scene)[0, k] > 0.1


def _others_fit(scene: data.Scene, k: int) -> bool:
    """Object k (as it is now in ``scene``) keeps GAP from the others and the border."""
    others = [(float(scene.cx[0, j]), float(scene.cy[0, j]),
               float(data.reach(scene.shape[0, j], scene.radius[0, j])))
              for j in range(data.MAX_OBJECTS) if scene.present[0, j] and j != k]
    rr = float(data.reach(scene.shape[0, k], scene.radius[0, k]))
    return data.fits(float(scene.cx[0, k]), float(scene.cy[0, k]), rr, others)


def _other(value: int, n: int, g: torch.Generator) -> int:
    return int((value + 1 + torch.randint(n - 1, (1,), generator=g)) % n)


def _resort(scene: data.Scene) -> tuple[data.Scene, list[int]]:
    """Objects sorted left to right again (after an add); returns the scene and the old → new index map."""
    s = scene.clone()
    m = int(s.present[0].sum())
    order = sorted(range(m), key=lambda j: float(s.cx[0, j]))
    for name in ("shape", "colour", "size", "pattern", "radius", "cx", "cy"):
        t = getattr(s, name)
        t[0, :m] = t[0, :m][order].clone()
    s.jitter[0, :m] = s.jitter[0, :m][order].clone()
    return s, [order.index(j) for j in range(m)]


def make_case(kind: str, g: torch.Generator) -> Case | None:
    """One case of ``kind`` from the generator, or None if this draw does not allow it (the caller draws again)."""
    count = {"colour": int(torch.randint(2, 4, (1,), generator=g)), "remove": int(torch.randint(2, 4, (1,), generator=g)),
             "add": int(torch.randint(1, 3, (1,), generator=g))}.get(kind, int(torch.randint(1, 4, (1,), generator=g)))
    style = 0 if kind == "style" else None
    src = data.sample_scenes(1, g, count=count, style=style)
    tgt = src.clone()
    m = int(src.present[0].sum())
    k = int(torch.randint(m, (1,), generator=g))
    obj = k
    if kind == "colour":
        tgt.colour[0, k] = _other(int(src.colour[0, k]), len(data.COLOURS), g)
        mask = _obj_mask(src, k)
    elif kind == "shape":
        tgt.shape[0, k] = _other(int(src.shape[0, k]), len(data.SHAPES), g)
        if not _others_fit(tgt, k):
            return None
        mask = _obj_mask(src, k) | _obj_mask(tgt, k)
    elif kind == "size":
        tgt.size[0, k] = 1 - src.size[0, k]
        lo, hi = data.R_SMALL if int(tgt.size[0, k]) == 0 else data.R_LARGE
        tgt.radius[0, k] = (lo + hi) / 2
        if not _others_fit(tgt, k):
            return None
        mask = _obj_mask(src, k) | _obj_mask(tgt, k)
    elif kind == "add":
        shape = int(torch.randint(len(data.SHAPES), (1,), generator=g))
        size = int(torch.randint(len(data.SIZES), (1,), generator=g))
        lo, hi = data.R_SMALL if size == 0 else data.R_LARGE
        r = lo + (hi - lo) * float(torch.rand(1, generator=g))
        fixed = [(float(src.cx[0, j]), float(src.cy[0, j]), float(data.reach(src.shape[0, j], src.radius[0, j])))
                 for j in range(m)]
        pos = data.place([shape], [r], g, fixed=fixed)
        if pos is None:
            return None
        tgt.present[0, m] = True
        tgt.shape[0, m], tgt.size[0, m], tgt.radius[0, m] = shape, size, r
        tgt.colour[0, m] = int(torch.randint(len(data.COLOURS), (1,), generator=g))
        tgt.cx[0, m], tgt.cy[0, m] = pos[0]
        tgt.jitter[0, m] = 0.0
        tgt, where = _resort(tgt)
        obj = where[m]
        mask = _obj_mask(tgt, obj)
    elif kind == "remove":
        mask = _obj_mask(src, k)
        keep = [j for j in range(m) if j != k]
        for name in ("shape", "colour", "size", "pattern", "radius", "cx", "cy"):
            t = getattr(tgt, name)
            t[0, :m - 1] = getattr(src, name)[0, keep]
        tgt.jitter[0, :m - 1] = src.jitter[0, keep]
        tgt.present[0, m - 1] = False
        tgt.cx[0, m - 1] = tgt.cy[0, m - 1] = -1.0
        tgt.radius[0, m - 1] = 0.0
    elif kind == "texture":
        tgt.texture[0] = _other(int(src.texture[0]), len(data.TEXTURES), g)
        interior = data.object_masks(src)[0].sum(0) >= 0.999   # the objects less their anti-aliased rims
        mask = _grow(~interior, 1)
        obj = -1
        return Case(kind, src, tgt, data.caption(src, 0), data.caption(tgt, 0), mask, obj)
    elif kind == "style":
        tgt.style[0] = int(torch.randint(1, len(data.STYLES), (1,), generator=g))
        mask = torch.ones(data.SIZE, data.SIZE, dtype=torch.bool)
        obj = -1
        return Case(kind, src, tgt, data.caption(src, 0), data.caption(tgt, 0), mask, obj)
    else:
        raise ValueError(f"unknown edit type {kind!r}; one of {EDIT_TYPES}")
    return Case(kind, src, tgt, data.caption(src, 0), data.caption(tgt, 0), _grow(mask), obj)


def cases(split: str, per_type: int, kinds=EDIT_TYPES) -> list[Case]:
    """``per_type`` cases of each kind from the split ("tune" or "test"); the same arguments give the same cases."""
    seed = {"tune": TUNE_SEED, "test": TEST_SEED}[split]
    out = []
    for t, kind in enumerate(kinds):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        made = 0
        while made < per_type:
            c = make_case(kind, g)
            if c is not None:
                out.append(c)
                made += 1
    return out
