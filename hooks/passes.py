"""The pass marker of every multi-pass method: a sampler that calls the model several times per step (Asyrp's
unshifted and shifted predictions; later P2P's source and target branches) marks each call in
``transformer_options[PASS_KEY]`` (through a clone of the model options, ``adapters.run.pass_options``), and the patches
(``hooks.hspace``, ``hooks.unet_split``) act on the passes they are meant for. A call without the key is an ordinary
one. Also: which rows of a batched call are cond / uncond. Pure torch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

PASS_KEY = "invedit_pass"
ORIG = "orig"         # the unshifted / source prediction
CACHE = "orig_cache"  # the unshifted prediction whose U-Net encoder state the next EDIT call reuses
EDIT = "edit"         # the shifted / target prediction
PASSES = (ORIG, CACHE, EDIT)


def pass_of(transformer_options: dict) -> Optional[str]:
    """The pass a model call is marked as (None: an ordinary call)."""
    return transformer_options.get(PASS_KEY)


def chunk_mask(cond_or_uncond: list[int], batch: int, apply_to: str, device, dtype) -> Optional[Tensor]:
    """[batch, 1, 1, 1] weights selecting the cond (0) / uncond (1) chunks of a batched U-Net call; None = all."""
    if apply_to == "both" or not cond_or_uncond:
        return None
    want = 0 if apply_to == "cond" else 1
    per = batch // len(cond_or_uncond)
    m = torch.tensor([float(c == want) for c in cond_or_uncond for _ in range(per)], device=device, dtype=dtype)
    return m.view(-1, 1, 1, 1)
