"""DOODL (Wallace, Gokul, Ermon, Naik, ICCV 2023): optimise the initial noise of an EDICT generation against a loss
on the final decoded pixels, with memory independent of the number of steps.

**Gradient through the chain.** The EDICT chain (x_T, y_T) -> (x_0, y_0) (``samplers.edict``) is exactly invertible, so
backpropagation needs no stored activations: ``EDICTChain`` keeps only the outputs; its backward walks the steps from
the last and, for each, rebuilds the step's input pair with the exact inverse (``edict_step_vjp``). The two model
evaluations of that inverse are at the very points the forward step evaluated (u' and v below), so they are run with
autograd on and serve the vector–Jacobian product too: a step's backward costs two model evaluations and two
model backward passes, no recomputation. Memory: one step's activations, whatever T. ``mode="checkpoint"`` keeps each step's input pair instead (2 latents per step) and needs no
inverse: the gradient is then bit-identical to naive autograd; ``reversible`` matches it to float64 rounding.
``mode="naive"`` is plain autograd through every step (memory linear in T; for comparisons).

**The update (paper Algorithm 1, with the official code's details).** With L̄ = ½(L(D(x_0)) + L(D(y_0))), D the VAE
decoder, and g_x, g_y the gradients of L̄ with respect to the x and y entries of the pair:

    raw step      s = −g            (tied: s = −½(g_x + g_y), the mean over the two entries)
    clipping      s ← clamp(s, −c, c) element-wise                      (c = 1e−3)
    momentum      b_i = μ·b_{i−1} + s_i, b_0 = s_0                      (μ = 0.9, no dampening)
    perturbation  x_T ← x_T + b_i + ξ,  ξ ~ N(0, (1e−4)²·I)            (one ξ for both entries)
    tying         x_T = y_T = their mean                                 (generation)
    renormalise   x_T ← x_T·n_0/‖x_T‖, n_0 = ‖x_T^(0)‖ (Frobenius)      (generation: the "Gaussian shell")

Starting from an EDICT-inverted real image the pair is untied and not renormalised (it is not on the shell).
``shared_step`` (our option, off in the paper) moves both entries of an untied pair by the same mean step, so the
inverted difference x_T − y_T is kept exactly: inversion amplifies x − y by p⁻² per step, and separate steps for x
and y broke the regenerated image within a few iterations on the shapes world.
Pure torch; the denoiser, decoder and loss come in as callables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ..samplers.edict import VP, Coordinates, EpsFromDenoiser, edict_step, prepare_sigmas, second_input_sigma, unmix
from ..samplers.steps import Callback, Step

BACKPROP_MODES = ("reversible", "checkpoint", "naive")


@dataclass
class ChainSpec:
    """What defines the chain: the denoiser D(x, σ) -> x0 (ComfyUI σ-space), SIGMAS, p, leapfrog, input scaling,
    state dtype, model dtype (the cast at the model call) and the backward mode."""
    denoiser: Callable[[Tensor, Tensor], Tensor]
    sigmas: Tensor
    p: float = 0.93
    leapfrog: bool = True
    official_input_scaling: bool = True
    state_dtype: torch.dtype = torch.float64
    model_dtype: Optional[torch.dtype] = None
    mode: str = "reversible"
    on_step: Optional[Callback] = None  # Step(i, of) during forward and backward: progress, interrupt
    coords: Coordinates = VP            # FLOW for flow-matching models (the Euler step: a = 1, b = σ' − σ)

    def __post_init__(self):
        if self.mode not in BACKPROP_MODES:
            raise ValueError(f"DOODL: backprop mode must be one of {BACKPROP_MODES}, got {self.mode!r}")
        self.sigmas = prepare_sigmas(self.sigmas, self.p, self.state_dtype, "DOODL")

    def step(self, eps, i: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return edict_step(eps, x, y, self.sigmas[i], self.sigmas[i + 1], self.p, self.leapfrog and i % 2 == 1,
                          self.official_input_scaling)

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1


def edict_step_vjp(spec: ChainSpec, eps, i: int, x: Tensor, y: Tensor, gx: Tensor,
                   gy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From step i's output pair and the loss gradient with respect to it: (its input pair, the gradient with respect
    to that). With u, v the copies updated first / second (v, u when leapfrog swaps), the step is

        u' = a·u + b·ε(v),   v' = a·v + b·ε(u'),   then the mixing (x', y') = mix(x, y)

    so, walking back: undo the mixing and pull (g_x', g_y') through it (g_x = p·(g_x' + (1−p)·g_y'),
    g_y = p·g_y' + (1−p)·(g_x' + (1−p)·g_y')); v = (v' − b·ε(u'))/a and u = (u' − b·ε(v))/a, while
    ḡ_u' = g_u' + b·J_ε(u')ᵀ·g_v',  g_u = a·ḡ_u',  g_v = a·g_v' + b·J_ε(v)ᵀ·ḡ_u'."""
    sigma, sigma_next, p = spec.sigmas[i], spec.sigmas[i + 1], spec.p
    x, y = unmix(x, y, p)
    gx_mixed = gx + (1 - p) * gy
    gx, gy = p * gx_mixed, p * gy + (1 - p) * gx_mixed
    if sigma_next == sigma:
        return x, y, gx, gy
    a, b = spec.coords.coefficients(sigma, sigma_next)
    swap = spec.leapfrog and i % 2 == 1
    (u1, v1), (gu1, gv1) = ((y, x), (gy, gx)) if swap else ((x, y), (gx, gy))
    second_in = second_input_sigma(sigma, sigma_next, spec.official_input_scaling)
    with torch.enable_grad():
        ul = u1.detach().requires_grad_(True)
        e1 = eps(ul, sigma, second_in)
        (j1,) = torch.autograd.grad(e1, ul, b * gv1)
    v = (v1 - b * e1.detach()) / a
    gu_bar = gu1 + j1
    with torch.enable_grad():
        vl = v.detach().requires_grad_(True)
        e2 = eps(vl, sigma, sigma)
        (j2,) = torch.autograd.grad(e2, vl, b * gu_bar)
    u = (u1 - b * e2.detach()) / a
    gu, gv = a * gu_bar, a * gv1 + j2
    return (v, u, gv, gu) if swap else (u, v, gu, gv)


class EDICTChain(torch.autograd.Function):
    """(x_T, y_T) -> (x_0, y_0) with a backward in memory independent of T (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, spec: ChainSpec):
        eps = EpsFromDenoiser(spec.denoiser, spec.model_dtype, spec.coords)
        x, y = x.detach().to(spec.state_dtype), y.detach().to(spec.state_dtype)
        inputs = []
        with torch.no_grad():
            for i in range(spec.steps):
                if spec.mode == "checkpoint":
                    inputs.append((x, y))
                x, y = spec.step(eps, i, x, y)
                if spec.on_step is not None:
                    spec.on_step(Step(i, 2 * spec.steps))
        ctx.spec = spec
        if spec.mode == "checkpoint":
            ctx.save_for_backward(*[t for pair in inputs for t in pair])
        else:
            ctx.save_for_backward(x, y)
        return x, y

    @staticmethod
    def backward(ctx, gx: Tensor, gy: Tensor):
        spec = ctx.spec
        eps = EpsFromDenoiser(spec.denoiser, spec.model_dtype, spec.coords)
        saved = ctx.saved_tensors
        gx = torch.zeros_like(saved[0]) if gx is None else gx.to(spec.state_dtype)
        gy = torch.zeros_like(saved[1]) if gy is None else gy.to(spec.state_dtype)
        x, y = (None, None) if spec.mode == "checkpoint" else saved
        for k, i in enumerate(reversed(range(spec.steps))):
            if spec.mode == "checkpoint":
                x_in, y_in = saved[2 * i], saved[2 * i + 1]
                with torch.enable_grad():
                    xi, yi = x_in.detach().requires_grad_(True), y_in.detach().requires_grad_(True)
                    xo, yo = spec.step(eps, i, xi, yi)
                    gx, gy = torch.autograd.grad((xo, yo), (xi, yi), (gx, gy))
                x, y = x_in, y_in
            else:
                x, y, gx, gy = edict_step_vjp(spec, eps, i, x, y, gx, gy)
            if spec.on_step is not None:
                spec.on_step(Step(spec.steps + k, 2 * spec.steps))
        return gx, gy, None


def edict_chain(x: Tensor, y: Tensor, spec: ChainSpec) -> tuple[Tensor, Tensor]:
    """The EDICT chain, differentiable in (x_T, y_T): ``EDICTChain`` (reversible / checkpoint), or plain autograd
    through every step (naive)."""
    if spec.mode != "naive":
        return EDICTChain.apply(x, y, spec)
    eps = EpsFromDenoiser(spec.denoiser, spec.model_dtype, spec.coords)
    x, y = x.to(spec.state_dtype), y.to(spec.state_dtype)
    for i in range(spec.steps):
        x, y = spec.step(eps, i, x, y)
        if spec.on_step is not None:
            spec.on_step(Step(i, spec.steps))
    return x, y


@dataclass
class DOODLConfig:
    iterations: int = 50
    lr: float = 1.0            # multiplies the gradient before clipping (the loss weights λ live in the loss)
    grad_clip: float = 1e-3    # element-wise clip of the raw step
    momentum: float = 0.9
    perturb_std: float = 1e-4  # std of ξ (the official code's; the paper writes it as a variance)
    tie: bool = True           # x_T = y_T after every update (generation)
    shared_step: bool = False  # untied pairs: move x_T and y_T by the same (mean) step, keeping x_T − y_T exactly
    renormalize: bool = True   # back to the initial norm after every update (generation)
    keep: str = "last"         # "last" or "best" (the lowest-loss iterate)


@dataclass
class DOODLResult:
    x: Tensor                  # the optimised pair (x_T, y_T) (the last, or the best with keep="best")
    y: Tensor
    losses: list = field(default_factory=list)   # L̄ of the pair each iteration was evaluated at (batch mean)
    best_iteration: int = -1   # keep="best" on a batch: the chosen iteration of the first image (per image: best_of)
    steps: list = field(default_factory=list)    # the clipped raw steps applied (diagnostics, tests)
    x0: Optional[Tensor] = None  # the chain's ends (x_0, y_0) of the kept iterate
    y0: Optional[Tensor] = None
    best_of: list = field(default_factory=list)  # keep="best": each image's chosen iteration


# loss_fn(x_0, y_0) -> (L̄, g_x0, g_y0): the loss on the decoded pixels of both ends and its gradients wrt them; L̄ a
# float (one loss for the whole batch) or a [B] tensor (each image's own: its gradient is its own loss's)
PixelLossFn = Callable[[Tensor, Tensor], tuple]


def pair_loss_gradients(decode_loss: Callable[[Tensor], Tensor]) -> PixelLossFn:
    """A ``PixelLossFn`` from ``decode_loss(z_0)`` (decoder + loss, differentiable): L̄ = ½(L(x_0) + L(y_0)), each
    end's graph built and freed in turn (two-phase backward: the decoder graph never lives beside the chain).
    ``decode_loss`` gives a scalar, or a [B] tensor of per-image losses: then L̄ is per image too, and each image's
    gradient is that of its own loss (the backward of their sum), as if it were optimised alone."""
    def fn(x0: Tensor, y0: Tensor):
        grads, total = [], 0.0
        for z in (x0, y0):
            leaf = z.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = 0.5 * decode_loss(leaf)
                (g,) = torch.autograd.grad(loss.sum(), leaf)
            grads.append(g)
            total = total + (float(loss.detach()) if loss.ndim == 0 else loss.detach().double().cpu())
        return total, grads[0], grads[1]
    return fn


def _per_image_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def _perturbation(shape, generator, dtype, device) -> Tensor:
    """ξ ~ N(0, I): from one generator, or, given one generator per image, each image's from its own (so an image
    of a batch draws what it draws alone)."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype, device="cpu") for g in generator]
                         ).to(device)
    return torch.randn(shape, generator=generator, dtype=dtype, device="cpu").to(device)


def doodl_optimize(spec: ChainSpec, loss_fn: PixelLossFn, x: Tensor, y: Tensor, config: DOODLConfig,
                   generator=None, on_iteration: Optional[Callback] = None) -> DOODLResult:
    """Algorithm 1: ``config.iterations`` updates of the pair (x_T, y_T) (VP latents at sigmas[0]). ``on_iteration``
    gets Step(it, iterations, x=x_0, y=y_0, loss=L̄) for every evaluated iterate (it = 0 … iterations).

    A batch is B independent optimisations: each image keeps its own loss (when ``loss_fn`` gives one per image),
    its own norm n_0 for the renormalisation, its own ξ (``generator``: one per image) and, with keep="best", its own
    best iterate; the clipping, the momentum and the tying are element-wise. The loss the callback and ``losses``
    report is the batch mean."""
    x, y = x.detach().to(spec.state_dtype).clone(), y.detach().to(spec.state_dtype).clone()
    if config.tie and not torch.equal(x, y):
        x = y = (x + y) / 2
    n0x, n0y = _per_image_norm(x), _per_image_norm(y)
    res = DOODLResult(x, y)
    buf_x = buf_y = None
    best = None
    for it in range(config.iterations + 1):  # the last pass only evaluates the final iterate
        xl, yl = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
        with torch.enable_grad():
            xo, yo = edict_chain(xl, yl, spec)  # reversible: keeps only (x_0, y_0) for the backward
        loss, g_x0, g_y0 = loss_fn(xo.detach(), yo.detach())
        per = torch.as_tensor(loss, dtype=torch.float64).flatten()
        if not torch.isfinite(per).all():
            raise FloatingPointError(f"DOODL: the loss became {per.tolist()} at iteration {it}; lower lr or the loss "
                                     f"weight")
        mean = float(per.mean())
        res.losses.append(mean)
        if on_iteration is not None:
            on_iteration(Step(it, config.iterations, x=xo.detach(), y=yo.detach(), loss=mean))
        if config.keep == "best":
            res.x, res.y, res.x0, res.y0, best = _keep_best(res, best, per, it, x, y, xo.detach(), yo.detach())
        if it == config.iterations:
            if config.keep != "best":
                res.x0, res.y0 = xo.detach(), yo.detach()
            break
        gx, gy = torch.autograd.grad((xo, yo), (xl, yl), (g_x0.to(xo.dtype), g_y0.to(yo.dtype)))
        del xo, yo
        sx, sy = -config.lr * gx, -config.lr * gy
        if config.tie or config.shared_step:
            sx = sy = (sx + sy) / 2
        sx, sy = sx.clamp(-config.grad_clip, config.grad_clip), sy.clamp(-config.grad_clip, config.grad_clip)
        res.steps.append((sx, sy))
        buf_x = sx if buf_x is None else config.momentum * buf_x + sx
        buf_y = sy if buf_y is None else config.momentum * buf_y + sy
        xi = config.perturb_std * _perturbation(x.shape, generator, x.dtype, x.device)
        x, y = x + buf_x + xi, y + buf_y + xi
        if config.tie:
            x = y = (x + y) / 2
        if config.renormalize:
            x = x * (n0x / _per_image_norm(x))
            y = x if config.tie else y * (n0y / _per_image_norm(y))
    if config.keep != "best":
        res.x, res.y, res.best_iteration = x, y, config.iterations
    return res


def _keep_best(res: DOODLResult, best, per: Tensor, it: int, x, y, x0, y0):
    """keep="best": each image's lowest-loss iterate so far (a single loss for the batch chooses for all)."""
    if best is None:
        res.best_of, res.best_iteration = [it] * x.shape[0], it
        return x, y, x0, y0, per.clone()
    better = per < best
    if per.numel() == 1 and x.shape[0] > 1:
        better = better.expand(x.shape[0])
    if not better.any():
        return res.x, res.y, res.x0, res.y0, best
    pick = better.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    res.best_of = [it if b else o for b, o in zip(better.tolist(), res.best_of)]
    res.best_iteration = res.best_of[0]
    return (torch.where(pick, x, res.x), torch.where(pick, y, res.y), torch.where(pick, x0, res.x0),
            torch.where(pick, y0, res.y0), torch.where(better, per, best))


def one_step_guidance_sample(denoiser: Callable[[Tensor, Tensor], Tensor], loss_of_latent: Callable[[Tensor], Tensor],
                             x: Tensor, sigmas: Tensor, scale: float, on_step: Optional[Callback] = None,
                             uncond_denoiser: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tensor:
    """The paper's baseline, one-step classifier guidance, as the official code computes it (salesforce/DOODL
    ``doodl.py``: ``get_generic_cond_fn``'s ``cond_fn`` with ``one_step_baseline=True``, applied in
    ``SteppingLayer.forward`` with ``single_variable=True``; the diffusers CLIP-guided pipeline's ``cond_fn``), in
    ComfyUI σ-space. At every step, with z = x/sqrt(1+σ²) the VP latent and fac = sqrt(1 − ᾱ) = σ/sqrt(1+σ²):

        x̂0_u = D_u(x, σ)                 the one-step estimate of the *unconditional* prediction, (z − fac·ε_u)/sqrt(ᾱ)
        s    = fac·x̂0_u + (1 − fac)·z     what is decoded and scored (not x̂0 itself)
        ε̃   = ε̂ + λ·fac·∇_z L(s) = ε̂ + λ·σ·∇_x L(s)      (official: noise_pred − fac·(−∇_z λL))
        D̃   = x − σ·ε̃ = D − λ·σ²·∇_x L(s),  then the DDIM (Euler) step x' = x + (σ' − σ)·(x − D̃)/σ

    D, ε̂: ``denoiser``, the guider's CFG-combined prediction (no gradient); D_u: ``uncond_denoiser``, the negative
    (the official null-prompt) prediction, the only one the gradient goes through; None (a guider without a negative)
    uses D for both. λ = ``scale`` (the official ``grad_scale``, which multiplies the loss; the paper uses λ = 30 for
    CLIP, 5 for fine-grained classifiers); no other normalisation of the gradient. ``loss_of_latent`` scores a
    model-space latent (decode + loss). Per step: the guided model call, one model call with gradients, one decode
    and one loss backward (λ = 0: the guided call only, plain DDIM)."""
    for i in range(sigmas.numel() - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x = x.detach()
        g = torch.zeros_like(x)
        if not scale:
            with torch.no_grad():
                d = denoiser(x, s)
        else:
            with torch.enable_grad():
                xl = x.clone().requires_grad_(True)
                if uncond_denoiser is None:
                    d = du = denoiser(xl, s)
                else:
                    with torch.no_grad():
                        d = denoiser(x, s)
                    du = uncond_denoiser(xl, s)
                fac, vp = s / (1 + s ** 2) ** 0.5, (1 + s ** 2) ** -0.5  # sqrt(1 − ᾱ); z = vp·x
                (g,) = torch.autograd.grad(loss_of_latent(fac * du + (1 - fac) * (vp * xl)), xl)
        d_tilde = d.detach() - scale * s ** 2 * g
        x = x + (s_next - s) * (x - d_tilde) / s
        if on_step is not None:
            on_step(Step(i, sigmas.numel() - 1, x, d_tilde, s, s_next))
    return x


# A heuristic warning, not a bound: the pair has drifted apart when ‖x_0 − y_0‖/‖x_0‖ grew past twice its start plus
# 0.05. The loss averages both ends, so steps can exploit the x/y coupling instead of changing the image.
DRIFT_FACTOR, DRIFT_MARGIN = 2.0, 0.05


def pair_drifted(gaps: list[float]) -> bool:
    """Whether the x_0/y_0 gap of the last iterate is past DRIFT_FACTOR·(first gap) + DRIFT_MARGIN."""
    return len(gaps) > 1 and gaps[-1] > DRIFT_FACTOR * gaps[0] + DRIFT_MARGIN
