"""h-space (Asyrp; Kwon, Jeong, Uh, ICLR 2023): the patch that adds directions Δh to the U-Net bottleneck.

h_t is the output of the U-Net's middle block (after a ControlNet's middle residual), the input of output block 0,
touched by no skip connection. An edit replaces h_t by

    h_t + Σ_i c_i · Δh_i(t)          inside the window  σ(t_start) ≥ σ ≥ σ(t_edit)

where Δh_i(t) is a direction (``hooks.directions``) and c_i its strength. In ``asymmetric`` mode the shift is applied
only to the pass the Asyrp sampler marks as the edit pass (``hooks.passes``), so that the predicted x0 P_t comes from
the shifted h and the direction term D_t from the unshifted one (paper eq. 6); in ``symmetric`` mode it is applied to
every pass (any sampler; an approximation, ~(1 − σ'/σ) times as strong per step).

The patch sits at ``middle_block_after_patch`` where the host has it (ComfyUI ≥ 0.20; it receives exactly h_t) and at
``output_block_patch`` ("output", 0) on older hosts; ``HSpacePatch`` takes either call. It is immutable configuration
(since ComfyUI 0.14 a clone shares it with its parent): the run's count of shifts and its "warned once" are kept in the
sampling run's ``hooks.run_state.RunState``.

Pure torch over tensors and ComfyUI's ``transformer_options`` dict; nothing here imports ComfyUI.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor

from .directions import SPATIAL_POLICIES, HSpaceError, Where
from .passes import EDIT, chunk_mask, pass_of
from .run_state import run_state

log = logging.getLogger(__name__)
APPLY_TO = ("both", "cond", "uncond")
APPLY_MODES = ("asymmetric", "symmetric")


def sigma_to_t(log_sigmas: Tensor, sigma: float) -> float:
    """The (fractional) timestep of σ on a discrete model's table log σ_t, t = 0…T−1 (linear in log σ between
    entries; ComfyUI's ``timestep()`` rounds the same to the nearest entry)."""
    ls = log_sigmas.double().cpu()
    if sigma <= 0:
        return 0.0
    x = math.log(sigma)
    if x <= float(ls[0]):
        return 0.0
    if x >= float(ls[-1]):
        return float(ls.numel() - 1)
    i = int(torch.searchsorted(ls, torch.tensor([x], dtype=torch.float64))[0])
    lo, hi = float(ls[i - 1]), float(ls[i])
    return i - 1 + (x - lo) / (hi - lo)


class HSpacePatch:
    """Adds strength·Δh(σ) to h at the U-Net bottleneck inside [sigma_lo, sigma_hi]: a ``middle_block_after_patch``
    (called with ComfyUI's dict, returns {"h": …}) or an ``output_block_patch`` acting at ("output", 0) (called with
    h, hsp, transformer_options).

    ``log_sigmas`` (the model's discrete noise table) lets trained directions see their timestep t and, with
    ``step_scaling``, the spacing Δt_gen of the current step in ``transformer_options["sample_sigmas"]``. Nothing in
    it changes after construction (clones share it); ``RunState.calls`` counts the shifts added in a run."""

    def __init__(self, direction, strength: float, sigma_hi: float, sigma_lo: float,
                 mode: str = "asymmetric", apply_to: str = "both", spatial: str = "resize",
                 log_sigmas: Optional[Tensor] = None, step_scaling: bool = True):
        if mode not in APPLY_MODES or apply_to not in APPLY_TO or spatial not in SPATIAL_POLICIES:
            raise HSpaceError(f"bad option: mode {mode!r}, apply_to {apply_to!r}, spatial {spatial!r}")
        if not math.isfinite(float(strength)):
            raise HSpaceError(f"the strength is {strength}; give a finite number (0 leaves the model unchanged)")
        self.direction, self.strength = direction, float(strength)
        self.sigma_hi, self.sigma_lo = float(sigma_hi), float(sigma_lo)
        self.mode, self.apply_to, self.spatial = mode, apply_to, spatial
        self.log_sigmas, self.step_scaling = log_sigmas, bool(step_scaling)

    def active(self, sigma: float) -> bool:
        return self.strength != 0.0 and self.sigma_lo <= sigma <= self.sigma_hi

    def where(self, sigma: float, transformer_options: dict) -> Where:
        if self.log_sigmas is None:
            return Where(sigma, None, None, self.spatial)
        t = sigma_to_t(self.log_sigmas, sigma)
        dt_gen = None
        schedule = transformer_options.get("sample_sigmas")
        if self.step_scaling and schedule is not None and schedule.numel() > 1:
            sched = schedule.detach().double().cpu()
            i = int((sched - sigma).abs().argmin())
            if i + 1 < sched.numel():
                dt_gen = t - sigma_to_t(self.log_sigmas, float(sched[i + 1]))
        return Where(sigma, t, dt_gen, self.spatial)

    def delta_for(self, h: Tensor, sigma: float, transformer_options: Optional[dict] = None) -> Tensor:
        if self.direction.channels != h.shape[1]:
            raise HSpaceError(f"the direction has {self.direction.channels} channels but this model's h-space has "
                              f"{h.shape[1]}: it was made for another model family "
                              f"({self.direction.meta.get('family', '?')})")
        d = self.direction.delta_for(h, self.where(sigma, transformer_options or {}))
        return (self.strength * d).to(h.device, h.dtype)

    def __call__(self, h, hsp=None, transformer_options: Optional[dict] = None):
        if isinstance(h, dict):  # middle_block_after_patch: {"h", "x", "emb", ..., "transformer_options"} -> {"h"}
            return {"h": self.shift(h["h"], h["transformer_options"])}
        if transformer_options.get("block") != ("output", 0):
            return h, hsp
        return self.shift(h, transformer_options), hsp

    def shift(self, h: Tensor, transformer_options: dict) -> Tensor:
        """h at the bottleneck -> h + strength·Δh where this call is in the window (and on the edit pass in
        asymmetric mode); h itself otherwise."""
        sigma = float(transformer_options["sigmas"].flatten()[0])
        if not self.active(sigma):
            return h
        if self.mode == "asymmetric" and pass_of(transformer_options) != EDIT:
            # a stock sampler marks no pass: the edit never happens; say so once per sampling run
            if pass_of(transformer_options) is None and run_state(transformer_options, create=True).first(
                    ("hspace-no-edit-pass", id(self))):
                log.warning("h-space Apply Direction (asymmetric) is sampled without the Asyrp Sampler, so the "
                            "direction is not applied: use the Asyrp Sampler, or set mode to symmetric for any "
                            "sampler.")
            return h
        delta = self.delta_for(h, sigma, transformer_options)
        mask = chunk_mask(transformer_options.get("cond_or_uncond", []), h.shape[0], self.apply_to, h.device, h.dtype)
        run = run_state(transformer_options)
        if run is not None:
            run.calls += 1
        return h + delta if mask is None else h + mask * delta


class HSpaceRecorder:
    """``output_block_patch`` that records the mean h of each cond (0) / uncond (1) chunk at ("output", 0), per σ."""

    def __init__(self):
        self.sums: dict = {}

    def __call__(self, h, hsp, transformer_options):
        if transformer_options.get("block") == ("output", 0):
            sigma = round(float(transformer_options["sigmas"].flatten()[0]), 6)
            kinds = transformer_options.get("cond_or_uncond", [0])
            for kind, chunk in zip(kinds, h.float().chunk(len(kinds))):
                acc = self.sums.setdefault((sigma, kind), [0.0, 0])
                acc[0] = acc[0] + chunk.sum(0).cpu()
                acc[1] += chunk.shape[0]
        return h, hsp

    def means(self, kind: int) -> tuple[Tensor, Tensor]:
        """(mean h [K, C, H, W] of the chunks of ``kind`` at each recorded σ, σ [K] descending)."""
        sigmas = sorted({s for s, k in self.sums if k == kind}, reverse=True)
        if not sigmas:
            raise HSpaceError("h-space: nothing was recorded")
        return (torch.stack([self.sums[s, kind][0] / self.sums[s, kind][1] for s in sigmas]),
                torch.tensor(sigmas, dtype=torch.float64))

    def difference(self) -> tuple[Tensor, Tensor]:
        """(Δh [K, C, H, W] = mean h(uncond chunk) − mean h(cond chunk), σ [K] descending)."""
        (src, s0), (trg, s1) = self.means(0), self.means(1)
        if not torch.equal(s0, s1):
            raise HSpaceError("h-space: the source and target passes were not both recorded at every step")
        return trg - src, s0
