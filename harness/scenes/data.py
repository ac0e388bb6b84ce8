"""Deterministic procedural images of the scenes world (pure torch): the yardstick world of issue 27.

Each 128×128 RGB image in [0, 1] holds one to three objects on a textured background, under a global style:
- object: shape ∈ SHAPES, colour ∈ COLOURS (small jitter), size ∈ SIZES (radius R_SMALL or R_LARGE px), centre
  anywhere it fits without touching another object (gap ≥ GAP px), optional pattern (PATTERNS: plain or a light
  inner ring), anti-aliased by rendering at SS× and averaging;
- background: texture ∈ TEXTURES (soft stripes, checks, dots, waves; random period, orientation, phase), drawn in
  one of COLOURWAYS (two muted colours; not named in the caption: the model samples it);
- style (the global palette) ∈ STYLES: normal, "pastel" (every pixel lifted toward white), "night" (darkened,
  blue-tinted): a change of style changes every pixel and keeps the structure.
Caption: the objects left to right, then the background, then the style:
"a small red circle and a large blue square on a striped background, at night".

Every random parameter lives in a :class:`Scene`, and :func:`render` is a pure function of it, so an edit is a
changed Scene rendered again: the edit suite gets the target image and the exact edit mask from the generator.
The 16×16 latent (8× VAE) keeps textures whose period is ≥ 14 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

SIZE = 128
MAX_OBJECTS = 3
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
TEXTURES = ("striped", "checked", "dotted", "wavy")
STYLES = ("normal", "pastel", "night")
PATTERNS = ("plain", "ringed")
STYLE_WORDS = {"normal": "", "pastel": ", pastel", "night": ", at night"}
RGB = torch.tensor([[0.86, 0.14, 0.13], [0.16, 0.68, 0.20], [0.15, 0.30, 0.88], [0.92, 0.84, 0.14]])
COLOURWAYS = torch.tensor([  # (colour a, colour b) of the background texture: muted, low contrast
    [[0.58, 0.58, 0.56], [0.44, 0.44, 0.43]],   # grey
    [[0.80, 0.73, 0.58], [0.64, 0.56, 0.42]],   # sand
    [[0.50, 0.62, 0.62], [0.36, 0.47, 0.49]],   # slate teal
    [[0.66, 0.58, 0.68], [0.50, 0.44, 0.54]],   # lilac
])
R_SMALL, R_LARGE = (8.0, 10.5), (14.0, 17.5)   # radius ranges (px) of "small" and "large"
GAP = 6.0          # min free pixels between two objects' circumcircles
EDGE = 3.0         # min free pixels between an object's circumcircle and the image border
P_COUNT = (0.35, 0.4, 0.25)  # probability of 1, 2, 3 objects
P_STYLE = (0.6, 0.2, 0.2)
P_RINGED = 0.0     # the optional pattern: off in the training data of the first models (see docs/scenes_world.md)
SS = 4             # supersampling factor


@dataclass
class Scene:
    """A batch of scenes' parameters; objects are sorted left to right and padded with ``present`` False."""
    present: torch.Tensor   # [B, 3] bool
    shape: torch.Tensor     # [B, 3] long
    colour: torch.Tensor    # [B, 3] long
    size: torch.Tensor      # [B, 3] long
    pattern: torch.Tensor   # [B, 3] long
    radius: torch.Tensor    # [B, 3] float (px)
    cx: torch.Tensor        # [B, 3] float
    cy: torch.Tensor        # [B, 3] float
    jitter: torch.Tensor    # [B, 3, 3] float: colour jitter per object
    texture: torch.Tensor   # [B] long
    colourway: torch.Tensor  # [B] long
    angle: torch.Tensor     # [B] float (radians)
    period: torch.Tensor    # [B] float (px)
    phase: torch.Tensor     # [B, 2] float
    style: torch.Tensor     # [B] long

    def __len__(self) -> int:
        return self.present.shape[0]

    def __getitem__(self, idx) -> "Scene":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Scene(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def clone(self) -> "Scene":
        return Scene(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    @property
    def count(self) -> torch.Tensor:
        return self.present.sum(1)

    @property
    def captions(self) -> list[str]:
        return [caption(self, i) for i in range(len(self))]

    def objects(self, i: int) -> list[dict]:
        return [{"shape": SHAPES[int(self.shape[i, k])], "colour": COLOURS[int(self.colour[i, k])],
                 "size": SIZES[int(self.size[i, k])], "pattern": PATTERNS[int(self.pattern[i, k])],
                 "cx": float(self.cx[i, k]), "cy": float(self.cy[i, k]), "radius": float(self.radius[i, k])}
                for k in range(MAX_OBJECTS) if self.present[i, k]]


def cat(scenes: list[Scene]) -> Scene:
    return Scene(**{f.name: torch.cat([getattr(s, f.name) for s in scenes]) for f in fields(Scene)})


def object_phrase(scene: Scene, i: int, k: int) -> str:
    pat = " ringed" if int(scene.pattern[i, k]) == 1 else ""
    return f"a {SIZES[int(scene.size[i, k])]} {COLOURS[int(scene.colour[i, k])]}{pat} {SHAPES[int(scene.shape[i, k])]}"


def caption(scene: Scene, i: int) -> str:
    objs = [object_phrase(scene, i, k) for k in range(MAX_OBJECTS) if scene.present[i, k]]
    head = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
    return (f"{head} on a {TEXTURES[int(scene.texture[i])]} background"
            f"{STYLE_WORDS[STYLES[int(scene.style[i])]]}")


def _radius(size: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    lo = torch.where(size == 0, R_SMALL[0], R_LARGE[0])
    hi = torch.where(size == 0, R_SMALL[1], R_LARGE[1])
    return lo + (hi - lo) * u


def reach(shape: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The circumradius of each shape around its centre (the triangle's is 1.2 r, the square's 0.89·√2 r)."""
    return radius * torch.where(shape == 2, 1.2, torch.where(shape == 1, 1.2587, 1.0))


def fits(cx, cy, rr, others: list[tuple[float, float, float]]) -> bool:
    if cx - rr < EDGE or cy - rr < EDGE or cx + rr > SIZE - EDGE or cy + rr > SIZE - EDGE:
        return False
    return all(math.hypot(cx - ox, cy - oy) >= rr + orr + GAP for ox, oy, orr in others)


def place(shape: list[int], radius: list[float], g: torch.Generator, fixed=(), tries: int = 200):
    """Centres for objects of these shapes and radii that fit the image and keep GAP from each other and from
    ``fixed`` ((cx, cy, reach) of objects already there); None when no placement was found in ``tries``."""
    placed = list(fixed)
    out = []
    for s, r in zip(shape, radius):
        rr = float(reach(torch.tensor(s), torch.tensor(r)))
        for _ in range(tries):
            cx, cy = (rr + EDGE + (SIZE - 2 * (rr + EDGE)) * torch.rand(2, generator=g)).tolist()
            if fits(cx, cy, rr, placed):
                break
        else:
            return None
        placed.append((cx, cy, rr))
        out.append((cx, cy))
    return out


def sample_scenes(n: int, g: torch.Generator, count: int | None = None, style: int | None = None,
                  texture: int | None = None) -> Scene:
    """n random scenes (objects sorted left to right); ``count`` / ``style`` / ``texture`` fix those."""
    k = MAX_OBJECTS
    counts = (torch.multinomial(torch.tensor(P_COUNT), n, replacement=True, generator=g) + 1
              if count is None else torch.full((n,), count))
    present = torch.arange(k)[None] < counts[:, None]
    shape = torch.randint(len(SHAPES), (n, k), generator=g)
    colour = torch.randint(len(COLOURS), (n, k), generator=g)
    size = torch.randint(len(SIZES), (n, k), generator=g)
    pattern = (torch.rand(n, k, generator=g) < P_RINGED).long()
    radius = _radius(size, torch.rand(n, k, generator=g))
    jitter = 0.04 * (torch.rand(n, k, 3, generator=g) - 0.5)
    cx = torch.full((n, k), -1.0)
    cy = torch.full((n, k), -1.0)
    for i in range(n):
        m = int(counts[i])
        while True:
            pos = place(shape[i, :m].tolist(), radius[i, :m].tolist(), g)
            if pos is not None:
                break
            size[i, :m] = 0  # three large objects that do not fit: make them small and try again
            radius[i, :m] = _radius(size[i, :m], torch.rand(m, generator=g))
        order = sorted(range(m), key=lambda j: pos[j][0])
        for t in (shape, colour, size, pattern, radius, jitter):
            t[i, :m] = t[i, :m][order].clone()
        cx[i, :m] = torch.tensor([pos[j][0] for j in order])
        cy[i, :m] = torch.tensor([pos[j][1] for j in order])
    shape[~present] = 0
    colour[~present] = 0
    size[~present] = 0
    pattern[~present] = 0
    radius[~present] = 0
    return Scene(present=present, shape=shape, colour=colour, size=size, pattern=pattern, radius=radius,
                 cx=cx, cy=cy, jitter=jitter,
                 texture=torch.randint(len(TEXTURES), (n,), generator=g) if texture is None else torch.full((n,), texture),
                 colourway=torch.randint(len(COLOURWAYS), (n,), generator=g),
                 angle=torch.randint(4, (n,), generator=g) * (math.pi / 4) + 0.15 * (torch.rand(n, generator=g) - 0.5),
                 period=16.0 + 8.0 * torch.rand(n, generator=g),
                 phase=2 * math.pi * torch.rand(n, 2, generator=g),
                 style=torch.multinomial(torch.tensor(P_STYLE), n, replacement=True, generator=g)
                 if style is None else torch.full((n,), style))


def resample(scene: Scene, g: torch.Generator, tries: int = 60) -> Scene:
    """The same discrete scenes (objects' shape, colour, size, pattern in caption order; texture; style) with new
    continuous parameters: radii within each size, positions (the left-to-right order kept, so the caption stays
    true), colour jitter, colourway, texture angle, period and phase. What a caption does not say is redrawn."""
    out = scene.clone()
    n, k = scene.present.shape
    out.radius = torch.where(scene.present, _radius(scene.size, torch.rand(n, k, generator=g)), 0.0)
    out.jitter = 0.04 * (torch.rand(n, k, 3, generator=g) - 0.5)
    for i in range(n):
        m = int(scene.present[i].sum())
        for _ in range(tries):
            pos = place(scene.shape[i, :m].tolist(), out.radius[i, :m].tolist(), g)
            if pos is not None and all(pos[j][0] < pos[j + 1][0] for j in range(m - 1)):
                break
            if _ == tries // 2:  # crowded: the smallest radii of each size
                out.radius[i, :m] = _radius(scene.size[i, :m], torch.zeros(m))
        else:
            raise RuntimeError(f"no left-to-right placement found for {caption(scene, i)!r}")
        out.cx[i] = torch.tensor([p[0] for p in pos] + [-1.0] * (k - m))
        out.cy[i] = torch.tensor([p[1] for p in pos] + [-1.0] * (k - m))
    out.colourway = torch.randint(len(COLOURWAYS), (n,), generator=g)
    out.angle = torch.randint(4, (n,), generator=g) * (math.pi / 4) + 0.15 * (torch.rand(n, generator=g) - 0.5)
    out.period = 16.0 + 8.0 * torch.rand(n, generator=g)
    out.phase = 2 * math.pi * torch.rand(n, 2, generator=g)
    return out


def _grid(ss: int = 1):
    c = (torch.arange(SIZE * ss, dtype=torch.float32) + 0.5) / ss
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


WIN = 48  # px: the window around an object's centre that holds all of it (largest reach 22 px)


def _windows(scene: Scene, j: int):
    """Per image, the top-left corner of object j's WIN×WIN window and the window's supersampled coordinates."""
    x0 = (scene.cx[:, j].floor() - WIN // 2).clamp(0, SIZE - WIN).long()
    y0 = (scene.cy[:, j].floor() - WIN // 2).clamp(0, SIZE - WIN).long()
    c = (torch.arange(WIN * SS, dtype=torch.float32) + 0.5) / SS
    xx = x0[:, None, None].float() + c[None, None, :]
    yy = y0[:, None, None].float() + c[None, :, None]
    return x0, y0, xx, yy


def _paste(win: torch.Tensor, x0, y0, j: int, out: torch.Tensor) -> None:
    cov = torch.nn.functional.avg_pool2d(win[:, None], SS)[:, 0]
    for i in range(win.shape[0]):
        out[i, j, int(y0[i]):int(y0[i]) + WIN, int(x0[i]):int(x0[i]) + WIN] = cov[i]


def object_masks(scene: Scene) -> torch.Tensor:
    """[B, 3, 128, 128] anti-aliased coverage of each object (zeros where absent)."""
    b, k = scene.present.shape
    out = torch.zeros(b, k, SIZE, SIZE)
    for j in range(k):
        x0, y0, xx, yy = _windows(scene, j)
        dx = xx - scene.cx[:, j, None, None]
        dy = yy - scene.cy[:, j, None, None]
        r = scene.radius[:, j, None, None]
        circle = dx * dx + dy * dy <= r * r
        square = (dx.abs() <= 0.89 * r) & (dy.abs() <= 0.89 * r)     # the circle's area
        big = 1.2 * r   # equilateral triangle pointing up, centroid at the centre (area ≈ 0.6 × the circle's)
        tri = (dy <= 0.5 * big) & (dy >= -big + 1.7320508 * dx.abs())
        s = scene.shape[:, j, None, None]
        m = torch.where(s == 0, circle, torch.where(s == 1, square, tri)).float()
        _paste(m * scene.present[:, j, None, None], x0, y0, j, out)
    return out


def ring_masks(scene: Scene) -> torch.Tensor:
    """[B, 3, 128, 128] the "ringed" pattern: a light circle of radius 0.45 r, 0.16 r wide, inside the object."""
    b, k = scene.present.shape
    out = torch.zeros(b, k, SIZE, SIZE)
    for j in range(k):
        if not bool((scene.pattern[:, j] == 1).any()):
            continue
        x0, y0, xx, yy = _windows(scene, j)
        d = ((xx - scene.cx[:, j, None, None]) ** 2 + (yy - scene.cy[:, j, None, None]) ** 2).sqrt()
        r = scene.radius[:, j, None, None]
        m = ((d - 0.45 * r).abs() <= 0.08 * r).float() * (scene.pattern[:, j, None, None] == 1)
        _paste(m, x0, y0, j, out)
    return out


def background(scene: Scene) -> torch.Tensor:
    """[B, 3, 128, 128]: the texture's mix t ∈ [0, 1] between the colourway's two colours."""
    xx, yy = _grid()
    xx, yy = xx[None], yy[None]
    a = scene.angle[:, None, None]
    p = scene.period[:, None, None]
    ph = scene.phase[:, :, None, None]
    u = (xx * torch.cos(a) + yy * torch.sin(a)) * (2 * math.pi / p) + ph[:, 0]
    v = (-xx * torch.sin(a) + yy * torch.cos(a)) * (2 * math.pi / p) + ph[:, 1]

    def soft(s, k=3.0):  # a soft square wave in [0, 1]
        return torch.sigmoid(k * s)
    stripes = soft(torch.sin(u))
    checks = soft(torch.sin(0.6 * u) * torch.sin(0.6 * v) * 2.0)  # cells of 0.83 period
    dots = soft((torch.cos(u) + torch.cos(v) - 0.6) * 2.5)
    waves = soft(torch.sin(u + 1.4 * torch.sin(v * 0.5)))
    tex = scene.texture[:, None, None]
    t = torch.where(tex == 0, stripes, torch.where(tex == 1, checks, torch.where(tex == 2, dots, waves)))
    ca, cb = COLOURWAYS[scene.colourway, 0], COLOURWAYS[scene.colourway, 1]
    return cb[:, :, None, None] + (ca - cb)[:, :, None, None] * t[:, None]


def apply_style(img: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    s = style[:, None, None, None]
    pastel = 0.55 * img + 0.45
    night = img * 0.6 * torch.tensor([0.8, 0.85, 1.15])[None, :, None, None] + 0.03
    return torch.where(s == 1, pastel, torch.where(s == 2, night, img)).clamp(0, 1)


def render(scene: Scene, chunk: int = 128) -> torch.Tensor:
    """[B, 3, 128, 128] in [0, 1]: a pure function of the scene's parameters."""
    if len(scene) > chunk:
        return torch.cat([render(scene[i:i + chunk]) for i in range(0, len(scene), chunk)])
    img = background(scene)
    masks = object_masks(scene)
    rings = ring_masks(scene)
    for j in range(MAX_OBJECTS):
        fg = (RGB[scene.colour[:, j]] + scene.jitter[:, j])[:, :, None, None]
        fg = fg * (1 - rings[:, j, None]) + (0.5 * fg + 0.5) * rings[:, j, None]
        m = masks[:, j, None]
        img = img * (1 - m) + fg * m
    return apply_style(img, scene.style)


def make_scenes(n: int, seed: int, **fixed) -> Scene:
    """n scenes from a seed: the same seed always gives the same scenes."""
    return sample_scenes(n, torch.Generator().manual_seed(seed), **fixed)


# Fixed splits (seeds) shared by training and evaluation: the edit suite's tuning and test splits are its own
# (harness/scenes/suite.py), drawn from seeds no training stage uses.
TRAIN_SEED, HELDOUT_SEED = 101, 102


def make_dataset(n: int, seed: int, chunk: int = 512) -> Scene:
    return cat([make_scenes(min(chunk, n - i), seed * 100003 + i) for i in range(0, n, chunk)])


def with_changes(scene: Scene, **changes) -> Scene:
    return replace(scene.clone(), **changes)
