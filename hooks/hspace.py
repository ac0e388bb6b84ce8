"""h-space (Asyrp; Kwon, Jeong, Uh, ICLR 2023): directions Δh added to the U-Net bottleneck.

h_t is the output of the U-Net's middle block (after a ControlNet's middle residual), the input of output block 0,
touched by no skip connection. An edit replaces h_t by

    h_t + Σ_i c_i · Δh_i(t)          inside the window  σ(t_start) ≥ σ ≥ σ(t_edit)

where Δh_i(t) is a direction (one tensor for all t, or one per noise level, looked up by nearest log σ) and c_i its
strength. In ``asymmetric`` mode the shift is applied only to the pass the Asyrp sampler marks as the edit pass, so that
the predicted x0 P_t comes from the shifted h and the direction term D_t from the unshifted one (paper eq. 6); in
``symmetric`` mode it is applied to every pass (any sampler; an approximation, ~(1 − σ'/σ) times as strong per step).

Directions are ``[K, C, H, W]`` tensors for K noise levels (K = 1: one direction for all t); a direction whose spatial
size differs from h's (another resolution or model) is fitted by ``fit_spatial``: ``resize`` (bilinear, default),
``channel_mean`` (its per-channel mean, broadcast over h) or ``strict`` (an error). The channel count must match.

Pure torch over tensors and ComfyUI's ``transformer_options`` dict; nothing here imports ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

PASS_KEY = "invedit_hspace_pass"     # transformer_options: "edit" or "orig" during an Asyrp step; absent otherwise
SPATIAL_POLICIES = ("resize", "channel_mean", "strict")
APPLY_TO = ("both", "cond", "uncond")
MODES = ("asymmetric", "symmetric")
REDUCE = ("per_timestep", "global")


class HSpaceError(ValueError):
    pass


@dataclass
class Direction:
    """Δh at K noise levels: ``delta`` [K, C, H, W] (float32), ``sigmas`` [K] descending (K = 1: every level)."""
    delta: Tensor
    sigmas: Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.delta.ndim == 3:
            self.delta = self.delta[None]
        if self.delta.ndim != 4:
            raise HSpaceError(f"an h-space direction is [K, C, H, W]; got shape {tuple(self.delta.shape)}")
        self.sigmas = torch.as_tensor(self.sigmas, dtype=torch.float64).flatten()
        if self.sigmas.numel() != self.delta.shape[0]:
            raise HSpaceError(f"{self.delta.shape[0]} direction tensors but {self.sigmas.numel()} noise levels")

    @property
    def channels(self) -> int:
        return self.delta.shape[1]

    def at(self, sigma: float) -> Tensor:
        """Δh [C, H, W] for noise level σ: the nearest stored level in log σ (the only one for K = 1)."""
        if self.delta.shape[0] == 1:
            return self.delta[0]
        logs = self.sigmas.clamp(min=1e-8).log()
        k = int((logs - torch.log(torch.tensor(max(float(sigma), 1e-8), dtype=torch.float64))).abs().argmin())
        return self.delta[k]


def combine(terms: list[tuple[Direction, float]]) -> Direction:
    """Σ_i c_i·Δh_i (h-space is linear: paper Sec. 5.2; weights (1 − α, α) interpolate). Directions on different level grids are evaluated on the union
    of their levels (nearest lookup); global (K = 1) directions apply at every level."""
    if not terms:
        raise HSpaceError("nothing to combine")
    shapes = {d.delta.shape[1:] for d, _ in terms}
    if len(shapes) > 1:
        raise HSpaceError(f"directions of different shapes cannot be added: {sorted(tuple(s) for s in shapes)}; "
                          f"extract them with the same model and resolution")
    grids = [d.sigmas for d, _ in terms if d.delta.shape[0] > 1]
    if not grids:
        levels = terms[0][0].sigmas
    else:
        levels = torch.unique(torch.cat(grids)).flip(0)
    delta = torch.stack([sum(c * d.at(float(s)) for d, c in terms) for s in levels])
    meta = {"kind": "composite", "family": terms[0][0].meta.get("family", ""),
            "parts": "; ".join(f"{c:g}·{d.meta.get('name', d.meta.get('kind', '?'))}" for d, c in terms)}
    return Direction(delta, levels, meta)


def fit_spatial(delta: Tensor, hw: tuple[int, int], policy: str = "resize") -> Tensor:
    """Δh [C, h, w] fitted to h's spatial size ``hw`` by ``policy`` (see the module docstring)."""
    if tuple(delta.shape[-2:]) == tuple(hw) or delta.shape[-2:] == (1, 1):
        return delta
    if policy == "resize":
        return F.interpolate(delta[None].float(), size=tuple(hw), mode="bilinear", align_corners=False)[0]
    if policy == "channel_mean":
        return delta.mean(dim=(-2, -1), keepdim=True)
    raise HSpaceError(f"the direction is {tuple(delta.shape[-2:])} but h is {tuple(hw)} at this resolution; "
                      f"set spatial_mode to resize or channel_mean, or use the resolution it was made at")


def chunk_mask(cond_or_uncond: list[int], batch: int, apply_to: str, device, dtype) -> Optional[Tensor]:
    """[batch, 1, 1, 1] weights selecting the cond (0) / uncond (1) chunks of a batched U-Net call; None = all."""
    if apply_to == "both" or not cond_or_uncond:
        return None
    want = 0 if apply_to == "cond" else 1
    per = batch // len(cond_or_uncond)
    m = torch.tensor([float(c == want) for c in cond_or_uncond for _ in range(per)], device=device, dtype=dtype)
    return m.view(-1, 1, 1, 1)


class HSpacePatch:
    """``output_block_patch`` adding strength·Δh(σ) to h at ("output", 0) inside [sigma_lo, sigma_hi]."""

    def __init__(self, direction: Direction, strength: float, sigma_hi: float, sigma_lo: float,
                 mode: str = "asymmetric", apply_to: str = "both", spatial: str = "resize"):
        if mode not in MODES or apply_to not in APPLY_TO or spatial not in SPATIAL_POLICIES:
            raise HSpaceError(f"bad option: mode {mode!r}, apply_to {apply_to!r}, spatial {spatial!r}")
        self.direction, self.strength = direction, float(strength)
        self.sigma_hi, self.sigma_lo = float(sigma_hi), float(sigma_lo)
        self.mode, self.apply_to, self.spatial = mode, apply_to, spatial
        self.calls = 0  # how many times a shift was added (tests, diagnostics)

    def active(self, sigma: float) -> bool:
        return self.strength != 0.0 and self.sigma_lo <= sigma <= self.sigma_hi

    def delta_for(self, h: Tensor, sigma: float) -> Tensor:
        d = self.direction.at(sigma)
        if d.shape[0] != h.shape[1]:
            raise HSpaceError(f"the direction has {d.shape[0]} channels but this model's h-space has {h.shape[1]}: "
                              f"it was made for another model family ({self.direction.meta.get('family', '?')})")
        return (self.strength * fit_spatial(d, h.shape[-2:], self.spatial)).to(h.device, h.dtype)

    def __call__(self, h: Tensor, hsp: Tensor, transformer_options: dict):
        if transformer_options.get("block") != ("output", 0):
            return h, hsp
        if self.mode == "asymmetric" and transformer_options.get(PASS_KEY) != "edit":
            return h, hsp
        sigma = float(transformer_options["sigmas"].flatten()[0])
        if not self.active(sigma):
            return h, hsp
        delta = self.delta_for(h, sigma)
        mask = chunk_mask(transformer_options.get("cond_or_uncond", []), h.shape[0], self.apply_to, h.device, h.dtype)
        self.calls += 1
        return (h + delta if mask is None else h + mask * delta), hsp


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


def reduce_levels(delta: Tensor, levels: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """``per_timestep``: as recorded; ``global``: the mean over the levels (one direction for every t)."""
    return (delta.mean(0, keepdim=True), levels[:1]) if reduce == "global" else (delta, levels)
