"""What the pack keeps in a LATENT dict, and the conversions between VAE space and the model's state.

Keys (stock samplers and Latent From Batch copy extra keys along):
- ``invedit_inversion``: the settings an inverted latent was made with (``InversionInfo``), validated on use;
- ``invedit_edict_y``: EDICT's y_T in VAE space, like ``samples`` (x_T); BDIA's z_{T−1} (the next level) in the same
  key; the key was ``edict_y`` before 0.2 and is still read from older LATENTs;
- ``invedit_edict_pair``: the exact pair in the state dtype, used while ``samples`` is unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import torch

import comfy.model_management

from .checks import model_family
from .fingerprint import fingerprint

INVERSION_KEY = "invedit_inversion"
EDICT_Y_KEY = "invedit_edict_y"
LEGACY_EDICT_Y_KEY = "edict_y"
EDICT_PAIR_KEY = "invedit_edict_pair"
PAIR_KEYS = (EDICT_PAIR_KEY, EDICT_Y_KEY, LEGACY_EDICT_Y_KEY)


@dataclass
class InversionInfo:
    """The settings of an inversion: what a regeneration must match to reproduce it (``adapters.edict`` checks
    them). Keys missing from a LATENT read as unknown."""
    method: str = "unknown"
    model_family: str = "unknown"
    sigmas: list = field(default_factory=list)
    cfg: float = float("nan")
    latent_shape: Optional[list] = None
    state_dtype: Optional[str] = None            # EDICT only, from here on
    p: Optional[float] = None
    leapfrog: Optional[bool] = None
    official_input_scaling: Optional[bool] = None
    gamma: Optional[float] = None                # BDIA only
    model_fingerprint: Optional[dict] = None     # adapters.fingerprint, compared on replay

    @classmethod
    def of(cls, model_patcher, sigmas: torch.Tensor, cfg: float, shape, method: str = "ddim",
           **settings) -> "InversionInfo":
        return cls(method, model_family(model_patcher.model), [float(s) for s in sigmas.flatten()], float(cfg),
                   list(shape), model_fingerprint=fingerprint(model_patcher), **settings)

    @classmethod
    def from_latent(cls, latent: dict) -> Optional["InversionInfo"]:
        d = latent.get(INVERSION_KEY)
        if not d:
            return None
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def describe(self) -> list[str]:
        lines = [f"inverted with   {self.method}, {self.steps} steps, cfg {self.cfg}, {self.model_family}"]
        if self.method == "edict":
            lines.append(f"EDICT           p {self.p}, leapfrog {'on' if self.leapfrog else 'off'}, "
                         f"{self.state_dtype} state")
        if self.method == "bdia":
            lines.append(f"BDIA            gamma {self.gamma}, {self.state_dtype} state")
        fp = self.model_fingerprint
        if isinstance(fp, dict):
            lines.append(f"model           weights {fp.get('weights')}, patches {fp.get('patches')}, "
                         f"{fp.get('sampling', '').split(',')[0]}")
        return lines


def edict_y(latent: dict) -> Optional[torch.Tensor]:
    """y_T of an EDICT pair LATENT (the current key, or the one older versions wrote)."""
    return latent.get(EDICT_Y_KEY, latent.get(LEGACY_EDICT_Y_KEY))


def without_pair(latent: dict) -> dict:
    """The LATENT without the pair's keys (a regenerated image is not a pair)."""
    return {k: v for k, v in latent.items() if k not in PAIR_KEYS}


def to_vae_space(model, x: torch.Tensor) -> torch.Tensor:
    """process_latent_out in x's dtype (the state dtype keeps the float32 round trip exact), then float32 on the
    intermediate device (what stock nodes expect)."""
    return model.model.process_latent_out(x).to(comfy.model_management.intermediate_device(), torch.float32)
