"""Pictures of the pack's numbers, pure PIL + torch: ``loss_chart`` draws a loss history as an RGB image tensor
[1, H, W, 3] in [0, 1] (ComfyUI's IMAGE layout), the same curve web/js/loss_chart.js draws on the node."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

BACKGROUND, AXES, CURVE, TEXT = (24, 24, 24), (110, 110, 110), (90, 170, 255), (220, 220, 220)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def loss_chart(steps: list, values: list, title: str = "loss", width: int = 512, height: int = 256,
               log_scale: bool = False) -> torch.Tensor:
    """The curve values(steps) with its axes, range labels and title. Non-finite values are left out of the curve;
    ``log_scale`` plots log10 of positive values."""
    img = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 56, width - 12, 24, height - 24
    d.rectangle([left, top, right, bottom], outline=AXES)
    d.text((left, 4), title, fill=TEXT)
    pts = [(float(s), float(v)) for s, v in zip(steps, values)
           if math.isfinite(float(v)) and (not log_scale or float(v) > 0)]
    if pts:
        ys = [math.log10(v) if log_scale else v for _, v in pts]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        s0, s1 = pts[0][0], pts[-1][0]
        span = (s1 - s0) or 1.0

        def xy(s, y):
            return (left + (s - s0) / span * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top))
        line = [xy(s, y) for (s, _), y in zip(pts, ys)]
        if len(line) > 1:
            d.line(line, fill=CURVE, width=2)
        for p in line if len(line) <= 64 else line[-1:]:
            d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=CURVE)
        unit = (lambda y: _fmt(10 ** y)) if log_scale else _fmt
        d.text((4, top), unit(hi), fill=TEXT)
        d.text((4, bottom - 10), unit(lo), fill=TEXT)
        d.text((left, bottom + 6), f"{int(s0)}", fill=TEXT)
        d.text((right - 40, bottom + 6), f"{int(s1)}", fill=TEXT)
        d.text((right - 150, 4), f"last {_fmt(pts[-1][1])}", fill=TEXT)
    else:
        d.text((left + 8, (top + bottom) // 2), "no finite values", fill=TEXT)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
