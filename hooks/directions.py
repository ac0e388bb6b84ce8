"""h-space directions (Asyrp; Kwon, Jeong, Uh, ICLR 2023): what is added to the U-Net bottleneck h_t.

Three kinds, all answering ``delta_for(h, where)`` (``where``: the noise level, the timestep and the step spacing):
- ``Direction``: ``[K, C, H, W]`` tensors for K noise levels (K = 1: one direction for all t), looked up by nearest
  log σ; one whose spatial size differs from h's (another resolution or model) is fitted by ``fit_spatial``:
  ``resize`` (bilinear, default), ``channel_mean`` (its per-channel mean, broadcast over h) or ``strict`` (an error).
  The channel count must match. A state difference: never step-scaled.
- ``ImplicitDirection``: the paper's learned f_t (``DeltaNet``), Δh_t = (Δt_gen/Δt_train)·f_t(h_t, t), where the step
  scaling keeps Σ_t Δh_t when sampling with other steps than training (paper Sec. 3.4, App. F: Δh̃ = f·S/S̃; the ratio of
  timestep spacings generalises S/S̃ to non-uniform and partial schedules). Each trained direction divides the
  current step's Δt_gen by its own Δt_train.
- ``Composite``: Σ_i c_i·Δh_i of any of these (h-space is linear, paper Sec. 5.2).

``to_tensors`` / ``from_tensors`` give each kind's file form (the file itself: ``artifacts.hspace``). Pure torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvEditError

SPATIAL_POLICIES = ("resize", "channel_mean", "strict")
REDUCE = ("per_timestep", "global")


class HSpaceError(InvEditError):
    pass


@dataclass
class Where:
    """Where a shift is asked for: noise level σ, timestep t (float; None when unknown), Δt_gen, the timestep spacing
    of the current sampling step (None when unknown or step scaling is off; each trained direction divides it by its
    own Δt_train), and the spatial policy."""
    sigma: float
    t: Optional[float] = None
    dt_gen: Optional[float] = None
    spatial: str = "resize"


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

    def delta_for(self, h: Tensor, where: Where) -> Tensor:
        """Δh(σ) fitted to h's spatial size (a state difference: never step-scaled)."""
        return fit_spatial(self.at(where.sigma), h.shape[-2:], where.spatial)


def to_tensors(direction) -> tuple[dict, dict]:
    """(tensors, metadata) to save a direction (see ``artifacts``); a composite with a trained part cannot be saved
    as one file."""
    if isinstance(direction, Direction):
        return {"delta_h": direction.delta.float(), "sigmas": direction.sigmas.double()}, dict(direction.meta)
    if isinstance(direction, ImplicitDirection):
        meta = dict(direction.meta, kind="implicit", channels=str(direction.channels),
                    temb_dim=str(direction.net.temb_dim))
        return {f"f.{k}": v.float() for k, v in direction.net.state_dict().items()}, meta
    raise HSpaceError("a combination that includes a trained direction cannot be saved as one file; save its parts "
                      "and combine them again after loading")


def from_tensors(tensors: dict, meta: dict):
    """The direction object of a loaded file (inverse of ``to_tensors``)."""
    if meta.get("kind") != "implicit":
        return Direction(tensors["delta_h"], tensors["sigmas"], meta)
    try:
        net = DeltaNet(int(meta["channels"]), int(meta.get("temb_dim", 128)))
        net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("f.")})
    except (KeyError, ValueError, RuntimeError) as e:
        raise HSpaceError(f"the trained direction's weights do not form an f_t network: {e}") from None
    return ImplicitDirection(net.eval().requires_grad_(False), meta)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """The DDPM sinusoidal embedding of (float) timesteps t [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class DeltaNet(nn.Module):
    """The implicit direction f_t (paper Sec. 3.4, App. E; the official ADM variant):

        Δh_t = conv2(SiLU(GN(conv1(SiLU(GN(h_t))) + W_t·SiLU(e(t)))))

    two 1×1 convolutions over the bottleneck's C channels, GroupNorm and SiLU, and a projection W_t of a timestep
    embedding e(t) added after the first. Deviations, both documented: e(t) is the net's own (sinusoidal embedding
    then an MLP) rather than the U-Net's time embedding, so the file works with any U-Net of the same width; and conv2
    is zero-initialised, so an untrained f_t gives Δh ≡ 0 instead of a random shift."""

    def __init__(self, channels: int, temb_dim: int = 128):
        super().__init__()
        groups = math.gcd(32, channels)
        self.channels, self.temb_dim = channels, temb_dim
        self.norm1, self.norm2 = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1)
        self.temb = nn.Sequential(nn.Linear(temb_dim, 2 * temb_dim), nn.SiLU(), nn.Linear(2 * temb_dim, channels))
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        x = self.conv1(F.silu(self.norm1(h)))
        x = x + self.temb(F.silu(timestep_embedding(t.to(h.device).expand(h.shape[0]), self.temb_dim)))[..., None, None]
        return self.conv2(F.silu(self.norm2(x)))


@dataclass
class ImplicitDirection:
    """A trained f_t: Δh_t = (Δt_gen/Δt_train)·f_t(h_t, t), computed in float32 and returned in h's dtype.
    ``train_dt`` (meta) is the timestep spacing Δt_train it was trained with; Δt_gen comes with ``Where``."""
    net: DeltaNet
    meta: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.net.channels

    @property
    def train_dt(self) -> float:
        return float(self.meta.get("train_dt", 0) or 0)

    def step_scale(self, where: Where) -> float:
        """Δt_gen/Δt_train (1 when either is unknown or step scaling is off)."""
        if where.dt_gen is None or self.train_dt <= 0:
            return 1.0
        return where.dt_gen / self.train_dt

    def delta_for(self, h: Tensor, where: Where) -> Tensor:
        if where.t is None:
            raise HSpaceError("a trained (implicit) direction needs the timestep; apply it with h-space Apply Direction")
        net = self.net
        first = next(net.parameters())
        if first.device != h.device:
            net.to(h.device)
        return self.step_scale(where) * net(h.float(), torch.tensor([float(where.t)], device=h.device))


@dataclass
class Composite:
    """Σ_i c_i·Δh_i over directions of any kind (evaluated per call; see ``combine`` for tensor-only sums)."""
    terms: list
    meta: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.terms[0][0].channels

    def delta_for(self, h: Tensor, where: Where) -> Tensor:
        return sum(c * d.delta_for(h, where) for d, c in self.terms)


def combine(terms: list[tuple]):
    """Σ_i c_i·Δh_i (h-space is linear: paper Sec. 5.2; weights (1 − α, α) interpolate). Tensor directions on
    different level grids are evaluated on the union of their levels (nearest lookup); global (K = 1) directions apply
    at every level; the result is a ``Direction``. With a trained (implicit) term the result is a ``Composite``."""
    if not terms:
        raise HSpaceError("nothing to combine")
    if not all(math.isfinite(float(c)) for _, c in terms):
        raise HSpaceError(f"a weight is not a finite number ({[c for _, c in terms]}); give finite weights")
    if len({d.channels for d, _ in terms}) > 1:
        raise HSpaceError(f"directions with different channel counts cannot be added: "
                          f"{sorted({d.channels for d, _ in terms})}; they belong to different model families")
    meta = {"kind": "composite", "family": terms[0][0].meta.get("family", ""),
            "parts": "; ".join(f"{c:g}·{d.meta.get('name', d.meta.get('kind', '?'))}" for d, c in terms)}
    prints = {d.meta.get("model_fingerprint") for d, _ in terms}
    if len(prints) == 1 and None not in prints:  # one model made them all: the sum keeps its fingerprint
        meta["model_fingerprint"] = prints.pop()
    if not all(isinstance(d, Direction) for d, _ in terms):
        return Composite(list(terms), meta)
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


def reduce_levels(delta: Tensor, levels: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """``per_timestep``: as recorded; ``global``: the mean over the levels (one direction for every t)."""
    return (delta.mean(0, keepdim=True), levels[:1]) if reduce == "global" else (delta, levels)
