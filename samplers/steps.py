"""The one record every loop of the pack reports after each step or iteration: samplers (DDIM, EDICT, Asyrp,
one-step guidance) and optimisers (DOODL, h-space training) call ``callback(Step(...))``; the ComfyUI adapter turns it
into the preview callback, the progress bar, the interrupt check and the live loss chart (``adapters.progress``).
Pure Python."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from torch import Tensor


@dataclass
class Step:
    """Step (or iteration) ``i`` of ``total`` (0-based: the one just finished).

    x, y: the state after it (σ-space latents for the samplers; EDICT's VP pair; DOODL's x_0, y_0); denoised: its x0
    estimate (σ-space) for previews; sigma, sigma_next: the levels it went between; loss: an optimiser's loss."""
    i: int
    total: int
    x: Optional[Tensor] = None
    denoised: Optional[Tensor] = None
    sigma: Optional[Tensor] = None
    sigma_next: Optional[Tensor] = None
    y: Optional[Tensor] = None
    loss: Optional[float] = None


Callback = Callable[[Step], None]


@dataclass
class LossHistory:
    """The losses of an optimiser run, one per step or iteration: what the LOSS_HISTORY socket carries (and the live
    chart on the node draws while it runs). ``label`` names the loss, ``method`` the optimiser."""
    method: str
    label: str = "loss"
    steps: list = field(default_factory=list)
    values: list = field(default_factory=list)

    def append(self, step: int, value: float) -> None:
        self.steps.append(int(step))
        self.values.append(float(value))

    def as_dict(self) -> dict:
        return {"method": self.method, "label": self.label, "steps": list(self.steps), "values": list(self.values)}
