"""CASO (Chang et al., IJCAI 2025, arXiv 2505.14254): learn, per attribute class a, a text-side embedding e_a such that
classifier-free guidance with e_a as the positive condition (the null text as negative) edits an image towards class a
of a frozen classifier F. Spec: caso.md §2.

Training step (no sampler unrolled, [P] Eq. 8–13, the official code's defaults; ``objective``):

    a ~ U{0 … K−1}, z0 = E(x) of images x, each flipped with p 0.5 in pixel space before the encoder E as the
    official code (given the latents of the mirror images, ``mirrored``; without them the latent is flipped)
    x_σ = z0 + σ_L·ε                               (forward noise to one level L; ComfyUI σ-space, Eq. 8)
    ẑ0 = D(x_σ, ∅) + λ·(D(x_σ, c(e_a)) − D(x_σ, ∅))  (one guided call: the Tweedie estimate, Eq. 9–10; CFG on the
                                                      x0-prediction equals CFG on ε)
    x̂ = Dec(ẑ0)                                     (the VAE decode, with gradients)
    L = ℓ_c(F(x̂), a) + γ·MSE(ẑ0, z0)               (Eq. 13; ℓ_c: (sigmoid(F) − a)² for a one-logit head [R],
                                                      cross-entropy for K logits [D])

and one AdamW step on e_a only (lr 2e-2, weight decay 5e-3). Every class is its own parameter of the optimiser and the
step sets the gradients to None first, so a class not drawn in a step does not move at all (no weight decay, no
momentum) and its bias correction counts its own steps, as in the official trainer, whose classes are separate
Linear(1, D) modules under one AdamW whose zero_grad() sets gradients to None (torch ≥ 2.0). Per class, the official
parametrisation e = W·1 + b under AdamW(lr 1e-2, wd 1e-2) moves exactly as this direct vector under AdamW(2e-2, 5e-3)
(``repo_equivalent``). Gradients reach e_a through the text encoder and the U-Net's cross-attention only; every
model stays frozen.

Editing (Eq. 6–7): DDIM-invert with the null text to the window's start, then denoise with
D = D_u + λ·(D_c − D_u) while t is inside the window [t_end, t_start] and D_u outside (``guided``); λ < 0 reverses
the edit. The window's fractions are steps of the T-step DDIM grid, as the training level is
(``grid_timestep``: 0.3 → t 301 at T = 50), and both ends belong to it.

Pure torch: the encoder, the denoiser, the decoder and the classifier come in as callables (the ComfyUI adapter is
``adapters.caso``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from . import descend
from ..errors import InvEditError
from ..samplers.steps import Callback, Step

LOSSES = ("auto", "mse_prob", "ce")


class CASOError(InvEditError, RuntimeError):
    pass


# -- the two formulas ---------------------------------------------------------------------------------------------

def guided(d_uncond: Tensor, d_cond: Tensor, scale: float) -> Tensor:
    """D_u + λ·(D_c − D_u): classifier-free guidance of the x0-predictions with any (also negative) scale λ; exactly
    D_u at λ = 0 and D_c at λ = 1."""
    if scale == 0:
        return d_uncond
    if scale == 1:
        return d_cond
    return d_uncond + scale * (d_cond - d_uncond)


def in_window(sigma: float, sigma_start: float, sigma_end: float) -> bool:
    """Whether a step at noise level σ lies in the edit window [σ_end, σ_start] (σ_start the noisier end)."""
    lo, hi = sorted((float(sigma_end), float(sigma_start)))
    return lo * (1 - 1e-6) <= float(sigma) <= hi * (1 + 1e-6)


def grid_timestep(fraction: float, steps: int, num_timesteps: int = 1000) -> int:
    """The timestep a fraction of T names: step k = round(fraction·T) of the T-step DDIM grid t_k = 1 + (N // T)·k
    (ComfyUI's ddim_uniform; diffusers' DDIM/PNDM grid of SD with steps_offset 1), clamped to the model's last
    timestep N − 1. The official trainer's level t = all_times[-30] of its 50-step grid is t 401 = this at 0.4; the
    paper's windows t ∈ [0.1T, 0.3T] at T = 50 are t 101 … 301. The edit window and the training level use this one
    map, so a fraction means the same timestep in both."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return min(1 + max(num_timesteps // steps, 1) * round(float(fraction) * steps), num_timesteps - 1)


def window_timesteps(window_start: float, window_end: float, steps: int,
                     num_timesteps: int = 1000) -> tuple[int, int]:
    """(t_start, t_end) of an edit window given as fractions of the timesteps on the T-step grid (``grid_timestep``).
    Both ends belong to the window (the paper's closed intervals t ∈ [0.1T, 0.3T]): at T = 50, 0.3 … 0 guides the 16
    steps t 301, 281, …, 1; [0.8, 0.9] and [0, 0.1] guide 6 steps each, and window_start = window_end guides exactly
    the one step at that timestep. Raises ValueError when the start lies below the end."""
    if not window_start >= window_end:
        raise ValueError(f"window_start {window_start} is below window_end {window_end}, but the window runs from the "
                         f"noisier start down to its end; swap them (window_start {window_end}, window_end "
                         f"{window_start})")
    return grid_timestep(window_start, steps, num_timesteps), grid_timestep(window_end, steps, num_timesteps)


def class_loss(logits: Tensor, target: int, loss: str = "auto") -> Tensor:
    """ℓ_c(F(x̂), a): for a one-logit head (a binary attribute) the official (sigmoid(F) − a)², a ∈ {0, 1}; for K
    logits cross-entropy to class a (or, ``mse_prob``, the squared error of its softmax probability to 1)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if logits.ndim != 2:
        raise ValueError(f"the classifier gives logits of shape {tuple(logits.shape)}, not [B, K]")
    k = logits.shape[1]
    if k == 1:
        if target not in (0, 1):
            raise ValueError(f"class {target} for a one-logit (binary) classifier; give 0 or 1")
        return ((torch.sigmoid(logits[:, 0]) - float(target)) ** 2).mean()
    if not 0 <= target < k:
        raise ValueError(f"class {target} is not one of the classifier's {k} classes (0 … {k - 1})")
    if loss == "mse_prob":
        return ((logits.softmax(1)[:, target] - 1.0) ** 2).mean()
    return torch.nn.functional.cross_entropy(logits, torch.full((logits.shape[0],), target, dtype=torch.long,
                                                                device=logits.device))


# -- training -----------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 2
    scale: float = 10.0          # λ_train [R]
    lr: float = 2e-2             # AdamW on the direct vector (≡ the repo's lr 1e-2 on W·1 + b)
    weight_decay: float = 5e-3   # (≡ the repo's 1e-2)
    gamma: float = 0.0           # weight of MSE(ẑ0, z0) [R: 0]
    loss: str = "auto"
    hflip: bool = True
    seed: int = 0
    dtype: str = "fp32"          # "bf16": the model calls under bf16 autocast (the embedding, loss and AdamW stay fp32)
    checkpointing: bool = False  # recompute text encoder, U-Net call, decode and classifier in the backward pass
    classifier_aug: str = "none"  # "flip_crop": the classifier sees a random flip and a 7/8 crop resized back


DTYPES = ("fp32", "bf16")
CLASSIFIER_AUGS = ("none", "flip_crop")


def segment(fn: Callable, checkpointing: bool) -> Callable:
    """``fn`` as one gradient-checkpointed segment: its activations are not kept between the forward and the
    backward pass but recomputed in the backward (torch.utils.checkpoint, non-reentrant: the same values and
    gradients, about one more forward in time)."""
    if not checkpointing:
        return fn
    from torch.utils.checkpoint import checkpoint
    return lambda *args: checkpoint(fn, *args, use_reentrant=False)


def _full(t: Tensor) -> Tensor:
    """A half-precision result (bf16 autocast) back to fp32; fp32 and fp64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def flip_crop(images: Tensor, gen: torch.Generator) -> Tensor:
    """The classifier's augmentation: a horizontal flip with p 0.5 and a random crop of 7/8 of the side resized back
    (bilinear, differentiable), one draw for the batch."""
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * 7 / 8)), max(1, round(w * 7 / 8))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    x = images[..., top:top + ch, left:left + cw]
    if float(torch.rand(1, generator=gen)) < 0.5:
        x = x.flip(-1)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


# encode(e [n, D]) -> the positive conditioning of class e (differentiable in e)
EncodeFn = Callable[[Tensor], object]
# denoise(x_σ, conditioning or None (the null text)) -> x0-prediction at σ_L
DenoiseFn = Callable[[Tensor, Optional[object]], Tensor]
# decode(ẑ0) -> images the classifier takes; classify(images) -> logits [B, K]
DecodeFn = Callable[[Tensor], Tensor]
ClassifyFn = Callable[[Tensor], Tensor]


@dataclass
class TrainResult:
    embeddings: Tensor                      # [K, n, D]
    losses: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    hits: list = field(default_factory=list)  # whether F labelled the step's decoded images as the step's class


def objective(e: Tensor, a: int, z0: Tensor, eps: Tensor, sigma: float, encode: EncodeFn, denoise: DenoiseFn,
              decode: DecodeFn, classify: ClassifyFn, scale: float, loss: str = "auto", gamma: float = 0.0,
              augment: Optional[Callable[[Tensor], Tensor]] = None, bf16: bool = False,
              denoise_cond: Optional[DenoiseFn] = None) -> tuple[Tensor, Tensor]:
    """CASO's loss of one training step for class ``a`` with embedding ``e`` [n, D] (the module docstring; Eq. 8–13):
    x_σ = z0 + σ·ε, ẑ0 = D(x_σ, ∅) + λ·(D(x_σ, c(e)) − D(x_σ, ∅)), L = ℓ_c(F(Dec(ẑ0)), a) + γ·MSE(ẑ0, z0).
    Differentiable in ``e``; the unconditional call runs without gradients (it does not depend on e).
    ``augment``: applied to the decoded images before F; ``bf16``: the model calls under bf16 autocast;
    ``denoise_cond``: the conditional call when it differs from ``denoise`` (a checkpointed segment).
    Returns (L, the logits)."""
    x = z0 + sigma * eps
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            d_u = denoise(x, None)
        d_c = (denoise_cond or denoise)(x, encode(e))
        z_hat = guided(_full(d_u), _full(d_c), scale)
        images = decode(z_hat)
        if augment is not None:
            images = augment(images)
        logits = _full(classify(images))
    value = class_loss(logits, a, loss)
    if gamma:
        value = value + gamma * torch.nn.functional.mse_loss(z_hat, z0)
    return value, logits


def train_embeddings(init: Tensor, latents: Tensor, sigma: float, encode: EncodeFn, denoise: DenoiseFn,
                     decode: DecodeFn, classify: ClassifyFn, config: TrainConfig,
                     progress: Optional[Callback] = None, mirrored: Optional[Tensor] = None) -> TrainResult:
    """Optimise the class embeddings ``init`` [K, n, D] on the clean latents [N, C, h, w] (CASO's training step of
    the module docstring at noise level ``sigma``). ``mirrored``: the latents of the same images mirrored in pixel
    space before the encoder (E(flip(x)), the official code's flip); with ``config.hflip`` a sample drawn flipped takes
    its mirror's latent, and without ``mirrored`` the latent itself is flipped (flip(E(x)), not the same: a VAE
    encoder is not mirror-symmetric). Each class is its own AdamW parameter and the gradients are set to None before
    every step, so only the drawn class moves and each class keeps its own moments and step count (the official
    trainer). One seeded generator draws every class, batch, flip and noise (in that order each step), so a seed fixes
    the run. ``progress`` gets a Step after every optimiser step (loss set) and may raise to interrupt. Raises
    CASOError on a non-finite loss (nothing is returned, so nothing half-trained is saved)."""
    if init.ndim != 3:
        raise ValueError(f"embeddings must be [K, n_tokens, D], got {tuple(init.shape)}")
    if config.dtype not in DTYPES or config.classifier_aug not in CLASSIFIER_AUGS:
        raise ValueError(f"dtype must be one of {DTYPES} and classifier_aug one of {CLASSIFIER_AUGS}, got "
                         f"{config.dtype!r}, {config.classifier_aug!r}")
    if mirrored is not None and mirrored.shape != latents.shape:
        raise ValueError(f"the mirror images' latents are {tuple(mirrored.shape)}, the images' "
                         f"{tuple(latents.shape)}; give one mirror per image")
    k = init.shape[0]
    # the embeddings and AdamW in fp32, or fp64 when init and latents are fp64 (the float64 tests)
    dtype = torch.float64 if init.dtype == latents.dtype == torch.float64 else torch.float32
    params = [torch.nn.Parameter(init[i].detach().clone().to(dtype)) for i in range(k)]
    encode_call, cond_call, decode_call, classify_call = (segment(f, config.checkpointing)
                                                          for f in (encode, denoise, decode, classify))
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(int(config.seed))
    result = TrainResult(init.detach().clone().to(dtype))
    n = latents.shape[0]
    augment = (lambda images: flip_crop(images, gen)) if config.classifier_aug == "flip_crop" else None
    for step in range(config.steps):
        a = int(torch.randint(0, k, (1,), generator=gen))
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=gen)
        z0 = latents[idx]
        if config.hflip:
            flip = (torch.rand(z0.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1).to(z0.device)
            z0 = torch.where(flip, z0.flip(-1) if mirrored is None else mirrored[idx], z0)
        eps = torch.randn(z0.shape, generator=gen).to(z0)
        loss, logits = objective(params[a], a, z0, eps, sigma, encode_call, denoise, decode_call, classify_call,
                                 config.scale, config.loss, config.gamma, augment, config.dtype == "bf16",
                                 denoise_cond=cond_call)
        value = descend(opt, loss, CASOError, f"step {step + 1} of {config.steps}",
                        "lower the learning rate or the training scale")
        result.losses.append(value)
        result.classes.append(a)
        with torch.no_grad():
            hit = (logits.detach()[:, 0] > 0).long() == a if logits.shape[1] == 1 else logits.detach().argmax(1) == a
        result.hits.append(float(hit.float().mean()))
        if progress is not None:
            progress(Step(step, config.steps, loss=value))
    result.embeddings = torch.stack([p.detach() for p in params]).clone()
    return result


def repo_equivalent(lr: float = 1e-2, weight_decay: float = 1e-2) -> tuple[float, float]:
    """The official parametrisation of one class, e = W·1 + b (two Linear(1, D) parameters with identical gradients,
    the same step count), under AdamW (lr, wd) moves exactly like a direct vector under AdamW(2·lr, wd/2): both take
    e·(1 − lr·wd) − 2·lr·m̂/(sqrt(v̂) + eps) with the same m̂, v̂. Returns (2·lr, wd/2). Exact per class because every
    class has its own optimiser state in both (``train_embeddings``); a world of n GPUs (lr·n in the official code)
    is lr·n here."""
    return 2 * lr, weight_decay / 2


# -- the result ---------------------------------------------------------------------------------------------------

@dataclass
class ClassEmbedding:
    """One learned class: ``tokens`` {text encoder key ("clip_l", "clip_g"): [n_tokens, D]} in the encoder's token
    input space (what the prompt ``embedding:<file>`` inserts after BOS), ``name`` and ``index`` of the class among
    ``meta['class_names']``; ``meta``: strings (attribute, classifier hash, text-encoder fingerprints, settings)."""
    name: str
    index: int
    tokens: dict
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return next(iter(self.tokens.values())).shape[0]
