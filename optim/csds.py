"""EMS / CSDS (Shuai, Wu, Tang, Song, Shen, arXiv 2408.13335): Extract-Manipulate-Sample editing with Constrained
Score Distillation, and the Semantic Disentanglement mEtric (SDE). Spec: ems_csds.md §2.

**Manipulate** (§2.3; tokens and pooled alike, every encoder's part): with the source and target encodings c0, c1
(equal shapes: the target caption is the source with only the edited words replaced) and the editing degree α,

    c~ = c0 + α·(c1 − c0)                         (α = 0: the source, 1: the target, > 1 extrapolates, < 0 reverses)
    c~ = c0 + Σ_k α_k·(c1^(k) − c0)               (several attributes: ``base`` accumulates)

**Sample: CSDS** (§2.4; the paper's §3.2). The paper's objective (Eq. 2), with z' the variable and z_t its start,

    L(z') = ‖ε_c~(z') − ε_attr(z')‖² + λ·‖ε_c~(z') − ε_c~(z_t)‖²                                     (Eq. 2)

and its update z'_t = z_t − η·∂CSDS, ∂CSDS the gradient of Eq. 2 (η the paper's step: 0.1 decaying to 0.01). Here
z_t = the noised source latent at σ0, ε_c(z) the model's noise prediction at σ0 under c (ε̂ = (x − A·x̂0)/B from
ComfyUI's x0 output: A = 1 − σ, B = σ for flow models, A = 1, B = σ for VE-scaled ε/v models), ε_attr the
attribute-only prompt's and ε_ref = ε_c~(z_t) fixed. Both modes step with the gradient of Eq. 2 itself (its factor 2
included), so ``lr_start`` / ``lr_end`` are the paper's η:

    delta:    g(z') = 2·[s_dir·(ε_attr(z') − ε_c~(z')) + λ·(ε_c~(z') − ε_ref)]      (every ε stop-gradient)
    autograd: g(z') = ∇_z' L(z')                                                     (through the model)
    z' ← z' − η_k·κ(σ0)·g(z'),   k = 0 … K−1,  η_k from lr_start to lr_end (``eta``)

``delta`` is Eq. 2's gradient the way the paper computes it ("we do not require the gradient of the diffusion
transformer", the SDS convention): the model's Jacobian ∂ε/∂z' replaced by the identity for the prediction that moves,
the other one held fixed. With s_dir = −1 (``literal_order``: ε_c~ the prediction, ε_attr its target, the equation's
term order) it is exactly ∇L of a model whose ∂ε_c~/∂z' = I with ε_attr held; s_dir = +1 (``toward_attribute``,
default, ours) swaps the roles in the first term: the step raises log p(z'|attr) − log p(z'|c~), our reading of the
paper's intent (Fig. 16; its wording, "the distance between the predicted noise ε_c~ and ε_attr", is literal_order). Until issue 24 g had no factor 2 (the DDS convention): the same lr_start gave half the paper's step.
The λ term is a restoring force (∂ε/∂z ≈ I at high noise): for a linear model ε(z, c) = a·z + W·c̄ the fixed point is
z* = z_t − s_dir·W·(c̄_attr − c̄~)/(λ·a) (the factor 2 scales both terms alike), reached monotonically when
0 < 2·η·κ·λ·a < 2; the displacement falls as 1/λ and vanishes when c_attr = c~.
κ(σ0) = 1 on flow models and sqrt(1 + σ0²) on VE-scaled ones (ComfyUI's ε/v latents x = z0 + σ·ε), so that η means
what it means in VP space (our addition, §2.4). ``autograd`` backpropagates through the model: expensive, and its
Eq. 2 loss really decreases for a small η, which delta mode does not promise (in a model linear in z the exact gradient
of the first term is 0).

**SDE** (§2.6, Eq. 1; lower is better): with h_same / h_flip the reconstructions from the same noised latent under
the image's own attribute prompt and the flipped one,

    SDE = d(x, h_same)/d(x, h_flip) + d(x, h_flip)                                                  (Eq. 1)

d = the L2 norm ‖·‖_2 over the image's pixels (``l2``, the paper's Eq. 1, the default) or the per-pixel RMSE over
[0, 1] pixels (``rmse`` = l2/sqrt(pixels·channels): the ratio term is the same, the second term is smaller; the
default until issue 24, chosen because the paper's values 1.1–1.4 look per-pixel).

Pure torch: the model comes in as a callable (the ComfyUI side is ``adapters.csds``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ..errors import InvEditError, quote
from ..samplers.steps import Callback, Step

DIRECTIONS = {"toward_attribute": 1.0, "literal_order": -1.0}
SCHEDULES = ("geometric", "linear", "cosine", "constant")
MODES = ("delta", "autograd")
LENGTH_POLICIES = ("zero_pad", "truncate", "error")
DISTANCES = ("l2", "rmse")


class CSDSError(InvEditError):
    """Bad EMS / CSDS input: mismatched encodings, a non-finite step, an unknown setting."""


# ---- Extract (no LLM: the user's caption, one word swapped) ---------------------------------------------------------

INSTRUCTION = ("Describe the image in one sentence. Then repeat that sentence changing only the words for {feature} "
               "to {value}. Then give only the phrase for {value}.")


def replace_words(text: str, find: str, replace: str, replace_all: bool = False) -> str:
    """``text`` with the whole-word, case-insensitive ``find`` replaced by ``replace`` (the first occurrence, or all):
    the target caption differs from the source only there ("cat" leaves "category" alone)."""
    import re
    if not find.strip():
        raise CSDSError("'find' is empty; give the word(s) to replace, or a target_override")
    pattern = re.compile(r"(?<!\w)" + re.escape(find.strip()) + r"(?!\w)", re.IGNORECASE)
    out, n = pattern.subn(replace.strip(), text, count=0 if replace_all else 1)
    if n == 0:
        raise CSDSError(f"{quote(find.strip())} is not a word of the source prompt {quote(text)}; type a word of "
                        f"the source prompt in 'find', or give the target as target_override")
    return out


# ---- Manipulate -----------------------------------------------------------------------------------------------------

def match_length(a: Tensor, b: Tensor, policy: str, who: str = "EMS") -> tuple[Tensor, Tensor]:
    """Token sequences [B, L, D] of two encodings brought to one length (dim 1): ``zero_pad`` the shorter at the end,
    ``truncate`` the longer, or ``error``. Other dimensions must agree."""
    if policy not in LENGTH_POLICIES:
        raise CSDSError(f"{who}: length_mismatch must be one of {LENGTH_POLICIES}, got {policy!r}")
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise CSDSError(f"{who}: the encodings differ beyond their length ({tuple(a.shape)} vs {tuple(b.shape)}): "
                        f"encode source and target with the same text encoder")
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    if policy == "error":
        raise CSDSError(f"{who}: the source has {la} tokens and the target {lb}; encode them with EMS Encode Edit "
                        f"Prompts (which pads both to one length), or choose length_mismatch zero_pad / truncate")
    if policy == "truncate":
        n = min(la, lb)
        return a[:, :n], b[:, :n]
    n = max(la, lb)
    pad = lambda t: torch.cat([t, t.new_zeros(t.shape[0], n - t.shape[1], *t.shape[2:])], 1)  # noqa: E731
    return pad(a), pad(b)


def manipulate(c0: Tensor, c1: Tensor, alpha: float, base: Optional[Tensor] = None,
               mask: Optional[Tensor] = None) -> Tensor:
    """base + α·(c1 − c0)·mask (base = c0 when not given; mask broadcast over the tensor, 1 where the edit acts).
    α = 0 returns base itself, bit for bit; c0, c1 and base are not modified."""
    base = c0 if base is None else base
    if alpha == 0:
        return base.clone()
    step = alpha * (c1 - c0)
    return base + (step if mask is None else step * mask)


def token_mask(length: int, part: str, clip_tokens: int, like: Tensor) -> Optional[Tensor]:
    """[1, L, 1] mask selecting the tokens an edit acts on: ``all`` (None), ``clip_part`` (the first ``clip_tokens``,
    SD3's CLIP-L/G block) or ``t5_part`` (the rest)."""
    if part == "all":
        return None
    idx = torch.arange(length, device=like.device)
    keep = idx < clip_tokens if part == "clip_part" else idx >= clip_tokens
    return keep.to(like.dtype)[None, :, None]


# ---- CSDS -----------------------------------------------------------------------------------------------------------

def eta(k: int, iterations: int, start: float, end: float, schedule: str = "geometric") -> float:
    """The step size of iteration k of K: η_0 = start, η_{K−1} = end, monotone between (one iteration: start)."""
    if schedule not in SCHEDULES:
        raise CSDSError(f"CSDS: lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or iterations <= 1:
        return float(start)
    u = k / (iterations - 1)
    if schedule == "linear":
        return float(start + (end - start) * u)
    if schedule == "cosine":
        return float(end + (start - end) * 0.5 * (1 + math.cos(math.pi * u)))
    if start <= 0 or end <= 0:  # geometric needs positive ends; fall back to linear through 0
        return float(start + (end - start) * u)
    return float(start * (end / start) ** u)


def kappa(flow: bool, sigma0: float, step_space: str = "auto") -> float:
    """κ(σ0): 1 on flow models or with ``raw``; sqrt(1 + σ0²) on VE-scaled ε/v models (``auto``)."""
    if step_space not in ("auto", "raw"):
        raise CSDSError(f"CSDS: step_space must be auto or raw, got {step_space!r}")
    return 1.0 if flow or step_space == "raw" else math.sqrt(1.0 + float(sigma0) ** 2)


def eps_from_x0(x: Tensor, x0: Tensor, a, b) -> Tensor:
    """ε̂ = (x − A·x̂0)/B for the forward noising x = A·x0 + B·ε (flow: A = 1 − σ, B = σ; VE: A = 1, B = σ)."""
    return (x - a * x0) / b


# predict(z) -> (ε_c~(z), ε_attr(z)): one batched model call at σ0 (the ComfyUI adapter builds it)
Predict = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class CSDSConfig:
    iterations: int = 50
    lr_start: float = 0.1
    lr_end: float = 0.01
    lr_schedule: str = "geometric"
    lam: float = 0.5                   # λ, the constraint's weight
    direction: str = "toward_attribute"
    mode: str = "delta"                # or "autograd" (Eq. 2's gradient through the model)

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise CSDSError(f"CSDS: direction must be one of {tuple(DIRECTIONS)}, got {self.direction!r}")
        if self.mode not in MODES:
            raise CSDSError(f"CSDS: grad_mode must be one of {MODES}, got {self.mode!r}")
        if self.iterations < 0 or self.lam < 0:
            raise CSDSError(f"CSDS: iterations and lambda must be >= 0, got {self.iterations} and {self.lam}")
        eta(0, 1, self.lr_start, self.lr_end, self.lr_schedule)  # checks the schedule's name


@dataclass
class CSDSResult:
    z: Tensor                                      # z'_t after the iterations (float32; float64 for float64 z_t)
    residuals: list = field(default_factory=list)  # ‖ε_attr − ε_c~‖ RMS per iteration (the attribute gap)
    losses: list = field(default_factory=list)     # the Eq. 2 loss per iteration (both modes; a diagnostic in delta
    #                                                mode, which does not descend it)


def eq2_loss(e_t: Tensor, e_a: Tensor, e_ref: Tensor, lam: float) -> Tensor:
    """The paper's Eq. 2: ‖ε_c~(z') − ε_attr(z')‖² + λ·‖ε_c~(z') − ε_c~(z_t)‖² (sums over every element)."""
    return ((e_t - e_a) ** 2).sum() + lam * ((e_t - e_ref) ** 2).sum()


def csds_refine(predict: Predict, zt: Tensor, config: CSDSConfig, step_scale: float = 1.0,
                mask: Optional[Tensor] = None, on_step: Optional[Callback] = None) -> CSDSResult:
    """K CSDS iterations from z_t (see the module docstring); ``step_scale`` = κ(σ0); ``mask`` (broadcast over z, 1
    where edits may act: a LATENT noise mask) multiplies the step. ``on_step`` gets Step(k, K, x=z', loss=L) after each
    iteration, L the Eq. 2 loss at the z' it stepped from. Computed in float32 whatever the model's dtype (in float64
    for a float64 z_t); a non-finite step stops with an error."""
    dt = torch.promote_types(zt.dtype, torch.float32) if zt.is_floating_point() else torch.float32
    z0 = zt.detach().to(dt)
    res = CSDSResult(z0.clone())
    if config.iterations == 0:
        return res
    s_dir = DIRECTIONS[config.direction]
    with torch.no_grad():
        e_ref = predict(z0)[0].to(dt)  # ε_c~(z_t), once
    z = z0.clone()
    for k in range(config.iterations):
        step_size = eta(k, config.iterations, config.lr_start, config.lr_end, config.lr_schedule) * step_scale
        if config.mode == "autograd":
            with torch.enable_grad():
                zl = z.detach().requires_grad_(True)
                e_t, e_a = (e.to(dt) for e in predict(zl))
                loss = eq2_loss(e_t, e_a, e_ref, config.lam)
                (g,) = torch.autograd.grad(loss, zl)  # ∇ Eq. 2 through the model
            e_t, e_a, loss = e_t.detach(), e_a.detach(), loss.detach()
        else:
            with torch.no_grad():
                e_t, e_a = (e.to(dt) for e in predict(z))
                g = 2.0 * (s_dir * (e_a - e_t) + config.lam * (e_t - e_ref))  # Eq. 2's gradient, ∂ε/∂z' := I
                loss = eq2_loss(e_t, e_a, e_ref, config.lam)
        if not torch.isfinite(g).all():
            raise CSDSError(f"CSDS: the step became NaN/inf at iteration {k}; lower lr_start or raise lambda (the "
                            f"model may overflow in half precision)")
        if mask is not None:
            g = g * mask
        z = (z - step_size * g).detach()
        res.residuals.append(float((e_a - e_t).pow(2).mean().sqrt()))
        res.losses.append(float(loss))
        if on_step is not None:
            on_step(Step(k, config.iterations, x=z, loss=float(loss)))
    res.z = z
    return res


# ---- SDE ------------------------------------------------------------------------------------------------------------

def distance(a: Tensor, b: Tensor, kind: str = "l2") -> Tensor:
    """Per image: the L2 norm ‖a − b‖_2 over all pixels (``l2``, the paper's Eq. 1) or the RMSE (``rmse``, the norm
    divided by sqrt(pixels·channels)) ([B, …] -> [B])."""
    if kind not in DISTANCES:
        raise CSDSError(f"SDE: distance must be one of {DISTANCES}, got {kind!r}")
    d = (a.double() - b.double()).flatten(1)
    return d.pow(2).mean(1).sqrt() if kind == "rmse" else d.norm(dim=1)


def sde(x: Tensor, same: Tensor, flipped: Tensor, kind: str = "l2", eps: float = 1e-8):
    """(SDE, ratio term, preservation term) of Eq. 1, each a batch mean: ratio = d(x, same)/max(d(x, flipped), eps),
    preservation = d(x, flipped); d as in ``distance`` (default the paper's L2 norm). A flipped reconstruction equal
    to the original (d = 0: the ratio is undefined) is refused."""
    if not (x.shape == same.shape == flipped.shape):
        raise CSDSError(f"SDE: the images differ in shape: {tuple(x.shape)}, {tuple(same.shape)}, "
                        f"{tuple(flipped.shape)}")
    d_same, d_flip = distance(x, same, kind), distance(x, flipped, kind)
    equal = [i + 1 for i in torch.nonzero(d_flip == 0).flatten().tolist()]
    if equal:  # d(x, same)/d(x, flipped) is undefined there (0/0 when both match: the NaN it gave)
        raise CSDSError(f"SDE: recon_flipped equals the original in image(s) {equal}, so the flipped prompt changed "
                        f"nothing and Eq. 1's ratio d(x, same)/d(x, flipped) is undefined; connect the "
                        f"reconstruction made under the flipped prompt (the attribute swapped) as recon_flipped")
    ratio = d_same / d_flip.clamp(min=eps)
    return float((ratio + d_flip).mean()), float(ratio.mean()), float(d_flip.mean())
