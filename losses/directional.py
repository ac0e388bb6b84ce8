"""The directional CLIP loss (Gal et al., StyleGAN-NADA; used by Asyrp eq. 4 and DiffusionCLIP):

    L_dir = 1 − cos(ΔI, ΔT),   ΔI = E_I(x_edit) − E_I(x_src),   ΔT = E_T(y_trg) − E_T(y_src)

with E_I / E_T CLIP's image / text encoders (``losses.clip.LocalCLIP``). Pure torch.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def directional_clip_loss(edit_features: Tensor, source_features: Tensor, text_direction: Tensor) -> Tensor:
    """mean over the batch of 1 − cos(E_I(edit) − E_I(source), ΔT)."""
    delta_i = edit_features - source_features
    return (1 - F.cosine_similarity(delta_i, text_direction.expand_as(delta_i), dim=-1, eps=1e-8)).mean()
