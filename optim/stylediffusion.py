"""Per-step inversion of a real image by optimisation along its DDIM-inversion pivots: StyleDiffusion's value mapper
(Li et al. 2023, arXiv 2303.15649, the official code's defaults) and null-text inversion (Mokady et al. 2023) on the
same loop. Spec: stylediffusion.md §2.

Grid [code]. T steps on the "leading" grid t_i = (1000/T)·(T − 1 − i), i = 0 … T − 1 (T = 30: 957, 924, …, 0), ending
at ᾱ_0 (not 1): σ-list σ(t_0), …, σ(t_{T−1}) = σ(0), σ(0), so the last denoising step (and the first inversion step)
is the identity. In σ-space (x = z/√ᾱ) the DDIM η = 0 step is x_{i+1} = x_i + (σ_{i+1} − σ_i)·ε.

Pivots. DDIM inversion at guidance 1 (cond branch only) from the clean latent gives ẑ_T … ẑ_0 (``pivots[j]``: the
latent at grid level j, j = T the clean one) and the cross-attention maps â of every inversion step.

Per denoising step i (from x̃_0 = ẑ_0, the noise latent):

    ε = ε_u + w·(ε_c − ε_u)                                   (CFG, w = 7.5)
    x̃_{i+1} = x̃_i + (σ_{i+1} − σ_i)·ε
    L_i = MSE(z̃_{i+1}, ẑ_{i+1}) + λ_att·Σ_layers MSE(ã_i, â_i)     (z = x/√(1+σ²): the official latent scale)

optimised with a fresh Adam for K_i = ⌈K·e^{−decay·i}⌉ iterations (K = 100, decay 0.1: Σ = 1015 for T = 30) at
lr_i = lr·(1 − lr_decay·i) (0.01, 0.01), stopping early once L_i < ε + slope·i (1e-5, 2e-5); then x̃_{i+1} is
recomputed with the final parameters and starts step i + 1.

- StyleDiffusion: the parameters are M_i, a mapping network from the image's CLIP tokens to the FiLM (A_i, B_i) of the
  cond branch's cross-attention VALUE input, ĉ_i = c ⊙ A_i + B_i (keys keep c); ε_u (plain ∅) has no gradient; M_i
  warm-starts from M_{i−1}; â_i = the inversion map computed at the same latent ẑ_i (the step ẑ_i → ẑ_{i−1}), â_0 = â_1
  duplicated (the official pairing).
- Null-text: the parameters are ∅_i, the uncond embedding of step i (keys and values), warm-started from ∅_{i−1}
  (∅_0 = the null prompt's); ε_c has no gradient; λ_att = 0 (10 iterations a step, 50 steps in the paper).
- Playback under τ_v (StyleDiffusion): the steps i < T·τ_v use (A_i, B_i), compared in floats as the official code
  (``value_steps``).

Parity: tests/unit/parity/test_stylediffusion_parity.py and test_nulltext_parity.py run float64 transcriptions of the
official loops (sen-mao/StyleDiffusion, google/prompt-to-prompt's null-text inversion) against these functions.

Pure torch: the model comes in as callables (the ComfyUI adapter is ``adapters.stylediffusion``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from . import descend
from ..errors import InvEditError
from ..samplers.coords import vp_scale
from ..samplers.ddim import ddim_step
from ..samplers.steps import Callback, Step


class InversionError(InvEditError, RuntimeError):
    pass


# -- grid and schedules -------------------------------------------------------------------------------------------

def leading_timesteps(steps: int, train_steps: int = 1000) -> list[int]:
    """t_i = (train_steps // T)·(T − 1 − i), noisiest first (T = 30: 957 … 0)."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be between 1 and {train_steps}, got {steps}")
    k = train_steps // steps
    return [k * (steps - 1 - i) for i in range(steps)]


def official_grid(model_sigmas: Tensor, steps: int) -> Tensor:
    """The σ-list of the official grid: σ(t_0), …, σ(t_{T−1}) and σ(0) again (final level ᾱ_0), [T + 1] float64.
    ``model_sigmas``: the model's σ per training timestep (ComfyUI's model_sampling.sigmas)."""
    ts = leading_timesteps(steps, model_sigmas.numel())
    s = model_sigmas.double()
    return torch.cat([s[ts], s[:1]])


@dataclass
class Schedule:
    """The inner loop [code]: K_i = ⌈K·e^{−decay·i}⌉ iterations at lr·(1 − lr_decay·i), a fresh Adam (β1, 0.999)
    each step, early stop below eps + slope·i; guidance w of the reconstruction; λ_att on the map loss."""
    inner: int = 100
    inner_decay: float = 0.1
    lr: float = 0.01
    lr_decay: float = 0.01
    beta1: float = 0.9
    stop_eps: float = 1e-5
    stop_slope: float = 2e-5
    guidance: float = 7.5
    attn_weight: float = 1.0

    def iterations(self, i: int) -> int:
        """K_i = ⌈K·e^{−decay·i}⌉ in float64, the official expression ``np.ceil(num_inner_steps * np.exp(-.1 * x))``
        (stylediffusion.py, VaeInversion.optimization; x = i); at least 1 (that bound only binds where e^{−decay·i}
        underflows to 0, decay·i > 745, beyond the nodes' ranges)."""
        return max(1, math.ceil(self.inner * math.exp(-self.inner_decay * i)))

    def lr_at(self, i: int) -> float:
        return self.lr * max(0.0, 1.0 - self.lr_decay * i)

    def stop(self, loss: float, i: int) -> bool:
        return loss < self.stop_eps + self.stop_slope * i


NULL_TEXT = Schedule(inner=10, inner_decay=0.0, attn_weight=0.0)  # Mokady et al.: 10 iterations a step


def map_target(i: int) -> int:
    """The inversion step whose cross-attention maps are step i's L_att target: the maps recorded at the same latent
    ẑ_i (the inversion step ẑ_i → ẑ_{i−1}, keyed i), and for i = 0 those of step 1 (the official
    ``self.ddim_inv_attn[NUM_DDIM_STEPS - i]`` with the last inversion step's maps appended twice)."""
    return max(int(i), 1)


def value_steps(steps: int, tau_v: float) -> int:
    """How many steps (from the noisiest) play the learned values back under τ_v: the steps i = 0 … T − 1 with
    i < T·τ_v, compared in Python floats as the official code does (stylediffusion.py, text2image_ldm_stable:
    ``trainer.i = i if i < NUM_DDIM_STEPS * trainer.v_replace_steps else None``). So T = 50, τ_v = 0.14 gives 8 steps
    (50 × 0.14 = 7.000000000000001 in floats), not 7. The callers gate step i with i < value_steps(T, τ_v): for an
    integer i that is the official comparison exactly; a fractional position between two grid steps (playback with
    ``interpolate``) is on while it lies before the first ungated step."""
    bound = steps * tau_v
    return sum(1 for i in range(steps) if i < bound)


# -- the value mapper ---------------------------------------------------------------------------------------------

class ValueMapper(nn.Module):
    """M_t [code]: CLIP image tokens [1, N, D_img] -> (A, B) [L, D]: (optional Linear D_img -> D when the widths
    differ) conv_start Conv1d(N -> 2L, 1) -> conv_block [Conv1d(2L -> 2L, 1), BatchNorm1d(2L), LeakyReLU(0.01)] ->
    conv_end Conv1d(2L -> 2L, 1); A = O[:L], B = O[L:]. BatchNorm always uses batch statistics (the official modules
    stay in train mode), so one image gives a constant per step that can be baked. ``identity`` init: conv_end = 0
    with bias 1 on the A half, so A = 1, B = 0 exactly (the plain model) before training."""

    def __init__(self, n_tokens: int, image_dim: int, context_dim: int, length: int = 77, init: str = "official"):
        super().__init__()
        self.length = length
        self.proj = nn.Linear(image_dim, context_dim) if image_dim != context_dim else None
        c = 2 * length
        self.conv_start = nn.Conv1d(n_tokens, c, 1)
        self.conv_block = nn.Sequential(nn.Sequential(nn.Conv1d(c, c, 1), nn.BatchNorm1d(c), nn.LeakyReLU(0.01)))
        self.conv_end = nn.Conv1d(c, c, 1)
        if init == "identity":
            with torch.no_grad():
                self.conv_end.weight.zero_()
                self.conv_end.bias.copy_(torch.cat([torch.ones(length), torch.zeros(length)]))
        elif init != "official":
            raise ValueError(f"init must be 'official' or 'identity', got {init!r}")

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        x = tokens if self.proj is None else self.proj(tokens)
        bn = self.conv_block[0][1]
        was = bn.training
        bn.train()  # batch statistics, always
        try:
            o = self.conv_end(self.conv_block(self.conv_start(x)))[0]
        finally:
            bn.train(was)
        return o[: self.length], o[self.length:]


# -- the loop -----------------------------------------------------------------------------------------------------

def ddim_pivots(x_0: Tensor, sigmas: Tensor, eps: Callable[[Tensor, Tensor, int], Tensor],
                progress: Optional[Callable[[int, Tensor], None]] = None) -> list:
    """The pivots [code: VaeInversion.ddim_loop / next_step]: DDIM inversion at guidance 1 from the clean latent
    ``x_0`` (σ-space at sigmas[-1]) along ``sigmas`` [T + 1]: for j = T … 1, ε = eps(x_j·√(1+σ_{j−1}²)/√(1+σ_j²),
    σ_{j−1}, j) (the model at the next noisier level on the current latent z_j) and x_{j−1} = x_j + (σ_{j−1} − σ_j)·ε.
    Returns pivots[0 … T] (pivots[T] = x_0, pivots[0] the noise latent); ``progress(j, x_{j−1})`` after each step."""
    steps = sigmas.numel() - 1
    pivots = [None] * (steps + 1)
    x = pivots[steps] = x_0
    for j in range(steps, 0, -1):
        s, s_up = sigmas[j], sigmas[j - 1]
        x = ddim_step(x, eps(x * (vp_scale(s_up) / vp_scale(s)), s_up, j), s, s_up)
        pivots[j - 1] = x
        if progress is not None:
            progress(j, x)
    return pivots


# begin(i, x) -> parameters of step i (the caller warm-starts them and caches the no-grad branch at x)
BeginFn = Callable[[int, Tensor], list]
# predict(x, i) -> (guided ε, cond cross-attention maps of the step or None)
PredictFn = Callable[[Tensor, int], tuple[Tensor, Optional[list]]]
# map_loss(maps, i) -> Σ_layers MSE(ã_i, â_i)
MapLossFn = Callable[[list, int], Tensor]


@dataclass
class InversionResult:
    latents: list            # x̃_0 … x̃_T (σ-space): the reconstruction trajectory with the final parameters
    losses: list             # the loss of every inner iteration
    step_losses: list        # the last inner loss of every step
    iterations: list         # inner iterations run per step


def optimise_steps(x_T: Tensor, pivots: list, sigmas: Tensor, begin: BeginFn, predict: PredictFn,
                   schedule: Schedule, map_loss: Optional[MapLossFn] = None,
                   progress: Optional[Callback] = None) -> InversionResult:
    """The per-step loop of the module docstring along ``sigmas`` [T + 1] from ``x_T`` (= pivots[0]); ``pivots[j]``
    is the DDIM-inversion latent at level j. ``progress`` gets a Step after every inner iteration (loss set) and
    may raise to interrupt. Raises InversionError on a non-finite loss (nothing is returned, so nothing half-trained
    is saved)."""
    steps = sigmas.numel() - 1
    if len(pivots) != steps + 1:
        raise ValueError(f"{len(pivots)} pivots for {steps} steps: the inversion and the grid differ")
    total = sum(schedule.iterations(i) for i in range(steps))
    x, latents, losses, step_losses, iters = x_T, [x_T], [], [], []
    k_done = 0
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        target = pivots[i + 1] / vp_scale(s_next)
        params = begin(i, x)
        opt = torch.optim.Adam(params, lr=schedule.lr_at(i), betas=(schedule.beta1, 0.999)) if params else None
        loss_v, n = float("nan"), 0
        for _ in range(schedule.iterations(i) if params else 0):
            eps, maps = predict(x, i)
            x_next = ddim_step(x, eps, s, s_next)
            loss = torch.nn.functional.mse_loss(x_next / vp_scale(s_next), target)
            if schedule.attn_weight and map_loss is not None and maps:
                loss = loss + schedule.attn_weight * map_loss(maps, i)
            loss_v = descend(opt, loss, InversionError, f"step {i + 1} of {steps}",
                             "lower the learning rate or use training in float32")
            n += 1
            k_done += 1
            losses.append(loss_v)
            if progress is not None:
                progress(Step(k_done - 1, total, x, None, s, s_next, loss=loss_v))
            if schedule.stop(loss_v, i):
                break
        with torch.no_grad():
            eps, _ = predict(x, i)
            x = ddim_step(x, eps, s, s_next).detach()
        latents.append(x)
        step_losses.append(loss_v)
        iters.append(n)
    return InversionResult(latents, losses, step_losses, iters)


class WarmStart:
    """The per-step parameters of the loop: ``template`` copied for step 0, then each step's copy of the previous
    step's trained one (``warm``), or of the template (cold). ``trained[i]`` keeps step i's after the loop."""

    def __init__(self, template, warm: bool = True):
        self.template, self.warm = template, warm
        self.trained: list = []

    def next(self):
        src = self.trained[-1] if (self.warm and self.trained) else self.template
        item = _copy(src)
        self.trained.append(item)
        return item


def _copy(x):
    if isinstance(x, nn.Module):
        return copy.deepcopy(x)
    return nn.Parameter(x.detach().clone(), requires_grad=True)


def parameters_of(item) -> list:
    return list(item.parameters()) if isinstance(item, nn.Module) else [item]


# -- the result ---------------------------------------------------------------------------------------------------

METHODS = ("stylediffusion", "null_text")
CHUNK = 77  # tokens of one CLIP chunk: the value tensors [T, L, D] hold one (L), as the mapper and P2P's maps


@dataclass
class ValueEmbedding:
    """What an inversion learned for one image, all an edit needs (no image encoder, no second inversion):

    - ``method`` "stylediffusion": ``scale``, ``shift`` = A_i, B_i [T, L, D] of the cond branch's value input;
      "null_text": ``null`` = ∅_i [T, L, D], the uncond embedding of each step;
    - ``sigmas`` [T + 1]: the grid (float64), ``x_T``: the noise latent (σ-space, model-scaled, at sigmas[0]);
    - ``meta``: strings: the model family, guidance, hashes of the source and null conditionings, the settings."""
    method: str
    sigmas: Tensor
    x_T: Tensor
    scale: Optional[Tensor] = None
    shift: Optional[Tensor] = None
    null: Optional[Tensor] = None
    meta: dict = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        self.meta = dict(self.meta or {})

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def guidance(self) -> float:
        return float(self.meta.get("guidance", "nan"))
