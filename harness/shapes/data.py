"""Deterministic procedural images of the shapes world (pure torch).

Each 64×64 RGB image in [0, 1] holds one object: shape ∈ SHAPES, colour ∈ COLOURS, radius 9–16 px, centre
anywhere it fits, on a smooth background of random grey level and tint (no pixel noise: it would be the only
thing a 4×8×8 latent cannot keep). Edges are anti-aliased by rendering at 4× and averaging.
Caption: "a {colour} {shape}".

64 px (not 32) because the VAE downsamples 8×: a 32 px image gives a 4×4 latent, too coarse for the UNet to
place a shape, and h-space needs a middle block over at least a few positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SIZE = 64
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
RGB = torch.tensor([[0.86, 0.14, 0.13], [0.16, 0.68, 0.20], [0.15, 0.30, 0.88], [0.92, 0.84, 0.14]])
R_MIN, R_MAX = 9.0, 16.0
SS = 4  # supersampling factor


def caption(colour: int, shape: int) -> str:
    return f"a {COLOURS[colour]} {SHAPES[shape]}"


CAPTIONS = [caption(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]


@dataclass
class Batch:
    images: torch.Tensor   # [B, 3, 64, 64] float32 in [0, 1]
    colour: torch.Tensor   # [B] long
    shape: torch.Tensor    # [B] long
    radius: torch.Tensor   # [B] float
    cx: torch.Tensor       # [B] float (pixels)
    cy: torch.Tensor       # [B] float

    @property
    def captions(self) -> list[str]:
        return [caption(int(c), int(s)) for c, s in zip(self.colour, self.shape)]


def sample_labels(n: int, g: torch.Generator, colour=None, shape=None):
    colour = torch.randint(len(COLOURS), (n,), generator=g) if colour is None else torch.full((n,), colour)
    shape = torch.randint(len(SHAPES), (n,), generator=g) if shape is None else torch.full((n,), shape)
    radius = R_MIN + (R_MAX - R_MIN) * torch.rand(n, generator=g)
    margin = radius * 1.2 + 1
    cx = margin + (SIZE - 2 * margin) * torch.rand(n, generator=g)
    cy = margin + (SIZE - 2 * margin) * torch.rand(n, generator=g)
    return colour, shape, radius, cx, cy


def shape_mask(shape, radius, cx, cy) -> torch.Tensor:
    """[B, 64, 64] coverage in [0, 1] of each shape (anti-aliased)."""
    n = shape.numel()
    coords = (torch.arange(SIZE * SS, dtype=torch.float32) + 0.5) / SS
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    r = radius[:, None, None]
    circle = dx * dx + dy * dy <= r * r
    square = (dx.abs() <= 0.89 * r) & (dy.abs() <= 0.89 * r)           # same area as the circle
    # equilateral triangle pointing up, centroid at (cx, cy), circumradius 1.2 r (area ≈ 0.6 × the circle's)
    R = 1.2 * r
    tri = (dy <= 0.5 * R) & (dy >= -R + 1.7320508 * dx.abs())
    s = shape[:, None, None]
    m = torch.where(s == 0, circle, torch.where(s == 1, square, tri)).float()
    return torch.nn.functional.avg_pool2d(m[:, None], SS)[:, 0].reshape(n, SIZE, SIZE)


def background(n: int, g: torch.Generator) -> torch.Tensor:
    """Smooth backgrounds: a grey level 0.35–0.65, a tint of ±0.06 per channel, a linear gradient of ±0.08."""
    base = 0.35 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    tint = 0.12 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    grad = 0.16 * (torch.rand(n, 2, 1, 1, generator=g) - 0.5)
    lin = (torch.arange(SIZE, dtype=torch.float32) / (SIZE - 1) - 0.5)
    return base + tint + grad[:, :1] * lin[None, None, None, :] + grad[:, 1:] * lin[None, None, :, None]


def render(colour, shape, radius, cx, cy, g: torch.Generator) -> torch.Tensor:
    n = colour.numel()
    bg = background(n, g)
    jitter = 0.04 * (torch.rand(n, 3, generator=g) - 0.5)
    fg = (RGB[colour] + jitter)[:, :, None, None]
    m = shape_mask(shape, radius, cx, cy)[:, None]
    return (bg * (1 - m) + fg * m).clamp(0, 1)


def make_batch(n: int, seed: int, colour=None, shape=None) -> Batch:
    """n images from a seed: the same seed always gives the same images."""
    g = torch.Generator().manual_seed(seed)
    labels = sample_labels(n, g, colour, shape)
    return Batch(render(*labels, g), *labels)


def make_dataset(n: int, seed: int, chunk: int = 512) -> Batch:
    parts = [make_batch(min(chunk, n - i), seed * 100003 + i) for i in range(0, n, chunk)]
    return Batch(*(torch.cat([getattr(p, f) for p in parts]) for f in Batch.__dataclass_fields__))


# Fixed splits (seeds) shared by training and evaluation.
TRAIN_SEED, HELDOUT_SEED = 1, 2
