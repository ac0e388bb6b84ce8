"""Training an implicit h-space direction f_t (Asyrp, Kwon, Jeong, Uh, ICLR 2023: Sec. 3.4, eq. 4 and 7, App. I).

For each training start x_T (a DDIM-inverted image or Gaussian noise), two trajectories run side by side through the
edit window [T, t_edit]: the edited one x̃_t (Asyrp steps with Δh_t = f_t(h_t, t)) and the source one x_t (plain DDIM).
At every step one of two losses (``TrainConfig.loss``):

    paper     L^(t) = λ_CLIP · L_dir(P_t^edit, y_trg; P_t^src, y_src)           + λ_recon · |P_t^edit − P_t^src|
    official  L^(t) = λ_CLIP · −log((2 − L_dir(P_t^edit, y_trg; x0, y_src))/2)  + λ_recon · |P_t^edit − P_t^src|

where P_t^edit is the predicted x0 of the U-Net with the shifted bottleneck at x̃_t, P_t^src the plain prediction at
x_t, x0 the training start's real image (``clip_sources``), L_dir = 1 − cos(E_I(edit) − E_I(source), ΔT) averaged
over the batch and |·| the mean absolute difference. ``paper`` is eq. 4/7 as printed; ``official`` is what
``diffusion_latent.py`` (``Asyrp.run_training``) computes: ``loss_clip = -log((2 - clip_loss_func(x0, src, x0_t,
trg)) / 2)``, ``loss = id_loss_w·0 + l1_loss_w·L1(x0_t, x0_t_origin)·cosine + clip_loss_w·loss_clip`` (the ID loss
is off, ``id_loss_w`` 0: not included). One optimiser step on f_t follows each step, and x̃_t is advanced with the
detached predictions, so each loss graph spans one U-Net decoder call (x̃_t carries no gradient).

Optimiser: Adam, not the official code's SGD (``TrainConfig.optimizer`` "sgd", which the node does not offer). Our
f_t starts at Δh ≡ 0 (zero-initialised last layer), where under the paper's loss ΔI = 0; L_dir is scale-invariant in
ΔI, so its gradient grows like 1/|ΔI| near the identity and SGD steps explode (measured on the shapes world: |f|
reached 7·10⁴·|h| within 40 steps at lr 0.005); Adam's normalised steps do not. λ_recon = recon_mult ·
cos(E_T(y_src), E_T(y_trg)) (a smaller L1 weight for larger edits; the official ``l1_loss_w·cosine``) is computed
by the caller.

Pure torch: the predictions, the decoder to images and CLIP come in as callables (the ComfyUI adapter is
``adapters.hspace_train``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

from . import descend
from ..samplers.asyrp import asyrp_step, symmetric_step
from ..errors import InvEditError
from ..losses.directional import official_clip_term
from ..samplers.steps import Callback, Step

# pair(x, σ) -> (P_orig without grad, P_edit with grad to f_t) at the same x; plain(x, σ) -> P without grad
PairFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
PlainFn = Callable[[Tensor, Tensor], Tensor]
# clip_loss(P_edit, source) -> L_dir (scalar, differentiable in P_edit); source: P_src (loss "paper") or the start's
# entry of clip_sources (loss "official": x0, in whatever form the caller's clip_loss takes, e.g. its CLIP features)
ClipLossFn = Callable[[Tensor, Any], Tensor]
LOSSES = ("paper", "official")


class TrainingError(InvEditError, RuntimeError):
    pass


@dataclass
class TrainConfig:
    lambda_clip: float = 0.8    # λ_CLIP (paper Table 3: 0.8 for most attributes)
    lambda_recon: float = 0.0   # λ_recon = recon_mult · cos(src, trg), computed by the caller
    lr: float = 0.003           # Adam learning rate
    epochs: int = 1
    lr_step_epochs: int = 3     # StepLR: lr × lr_gamma every lr_step_epochs epochs (official)
    lr_gamma: float = 0.1
    loss: str = "paper"         # "paper" (eq. 4/7) or "official" (diffusion_latent.py), see the module docstring
    optimizer: str = "adam"     # "adam" (the pack's) or "sgd" (the official code's; diverges with a zero-initialised f)


def train_direction(params: Iterable[torch.nn.Parameter], pair: PairFn, plain: PlainFn, clip_loss: ClipLossFn,
                    starts: list[Tensor], sigmas: Tensor, config: TrainConfig,
                    progress: Optional[Callback] = None, clip_sources: Optional[list] = None) -> list[float]:
    """Train f_t's ``params`` (Adam, or the official SGD; StepLR per epoch) over ``starts`` (σ-space latents at
    sigmas[0]) along the descending window ``sigmas`` (σ_0 > … > σ_n: n trained steps, the last one ending at σ_n).
    With ``config.loss`` "official", ``clip_sources[j]`` is start j's CLIP source x0 (required then). Returns the loss
    of every step; ``progress`` gets Step(k, total, x̃_t, P_edit, σ, σ', loss) after optimiser step k.
    Raises ``TrainingError`` on a non-finite loss (nothing is returned, so nothing half-trained is saved)."""
    if config.loss not in LOSSES:
        raise ValueError(f"h-space training: loss {config.loss!r} is not one of {LOSSES}")
    official = config.loss == "official"
    if official and (clip_sources is None or len(clip_sources) != len(starts)):
        raise ValueError("h-space training: the official loss needs the real image x0 of every start (clip_sources)")
    params = list(params)
    if config.optimizer not in ("adam", "sgd"):
        raise ValueError(f"h-space training: optimizer {config.optimizer!r} is not adam or sgd")
    opt = (torch.optim.Adam(params, lr=config.lr) if config.optimizer == "adam"
           else torch.optim.SGD(params, lr=config.lr, weight_decay=0))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, config.lr_step_epochs), gamma=config.lr_gamma)
    n = sigmas.numel() - 1
    total, losses = config.epochs * len(starts) * n, []
    for _ in range(config.epochs):
        for j, x_start in enumerate(starts):
            x_edit = x_src = x_start
            for i in range(n):
                s, s_next = sigmas[i], sigmas[i + 1]
                p_orig, p_edit = pair(x_edit, s)
                with torch.no_grad():
                    p_src = p_orig.detach() if x_src is x_edit else plain(x_src, s)
                if official:
                    loss = config.lambda_clip * official_clip_term(clip_loss(p_edit, clip_sources[j]))
                else:
                    loss = config.lambda_clip * clip_loss(p_edit, p_src)
                if config.lambda_recon:
                    loss = loss + config.lambda_recon * (p_edit - p_src).abs().mean()
                losses.append(descend(opt, loss, TrainingError, f"step {len(losses) + 1} of {total}"))
                with torch.no_grad():
                    x_edit = asyrp_step(x_edit, s, s_next, p_orig.detach(), p_edit.detach())
                    x_src = symmetric_step(x_src, s, s_next, p_src)
                if progress is not None:
                    progress(Step(len(losses) - 1, total, x_edit, p_edit.detach(), s, s_next, loss=losses[-1]))
        sched.step()
    return losses


def loss_summary(losses: list[float]) -> tuple[float, float, int]:
    """(the first step's loss, the mean over the last k steps, k = a tenth of the steps, at least 1): what the node
    shows and the file's metadata keep."""
    k = max(1, len(losses) // 10)
    return losses[0], sum(losses[-k:]) / k, k
