"""Gradient procedures, pure torch: h-space direction training (``hspace``), DOODL (``doodl``), StyleDiffusion and
null-text inversion (``stylediffusion``), CASO (``caso``); their ComfyUI sides are in ``adapters/``. ``descend`` is the
one optimiser step they share."""
from __future__ import annotations

import math


def descend(opt, loss, error: type, where: str, fix: str = "lower the learning rate") -> float:
    """One optimiser step on ``loss``: refuse a non-finite loss (raising ``error`` with ``where`` and ``fix``, before
    any parameter moves), else backward and step; returns the loss's value."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise error(f"the loss became {value} at {where}; {fix}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value
