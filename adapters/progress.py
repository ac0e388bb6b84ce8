"""One step record (``samplers.steps.Step``) to what ComfyUI shows while a node runs: the interrupt check, the
sampler callback (previews and the progress bar), and the live loss chart on the running node.

The chart (web/js/loss_chart.js) listens for ``invedit.loss`` messages: {"node", "prompt_id", "method", "label",
"step", "expected", "value"} (``expected``: how many values the run will send), one per optimiser step, sent to the client that queued the prompt; the node's ui output
``invedit_loss`` (the whole history) redraws it after the run. Nothing is stored in the workflow.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import comfy.model_management
from comfy_api.latest import ui
from comfy_execution.utils import get_executing_context

from ..samplers.steps import LossHistory, Step

log = logging.getLogger(__name__)
LOSS_EVENT = "invedit.loss"
UI_KEY = "invedit_loss"


def check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def reporter(callback: Optional[Callable] = None, preview: Optional[Callable[[Step], tuple]] = None,
             total: Optional[int] = None) -> Callable[[Step], None]:
    """A ``Step`` callback for the pure loops: checks interrupt, then calls ComfyUI's sampler ``callback(i, denoised,
    x, total)`` with ``preview(step) -> (denoised, x)`` (default: the step's own) and ``total`` (default: the step's)."""
    def report(step: Step) -> None:
        check_interrupt()
        if callback is not None:
            denoised, x = preview(step) if preview is not None else (step.denoised, step.x)
            callback(step.i, x if denoised is None else denoised, x, step.total if total is None else total)
    return report


class LiveLoss:
    """Collects an optimiser's losses into a ``LossHistory`` and pushes each to the chart on the running node.
    ``inclusive``: the loop reports steps 0 … total (DOODL evaluates the final iterate too), else 0 … total − 1."""

    def __init__(self, method: str, label: str = "loss", inclusive: bool = False):
        self.history = LossHistory(method, label)
        self.inclusive = inclusive
        ctx = get_executing_context()
        self.node, self.prompt_id = (ctx.node_id, ctx.prompt_id) if ctx is not None else (None, None)

    def __call__(self, step: Step) -> None:
        if step.loss is None:
            return
        self.history.append(step.i, step.loss)
        self.send(step)

    def send(self, step: Step) -> None:
        if self.node is None:
            return
        try:
            from server import PromptServer
            server = PromptServer.instance
        except (ImportError, AttributeError):
            return
        server.send_sync(LOSS_EVENT, {"node": self.node, "prompt_id": self.prompt_id, "method": self.history.method,
                                      "label": self.history.label, "step": step.i,
                                      "expected": step.total + int(self.inclusive),
                                      "value": float(step.loss)}, server.client_id)

    def ui(self, text: str) -> "TextAndLoss":
        """The node's ui output: its summary text, and the history that redraws the final curve after the run."""
        return TextAndLoss(text, self.history)


class TextAndLoss(ui.PreviewText):
    """A node's ui output with a summary text (shown by the stock frontend) and the loss history (drawn by
    web/js/loss_chart.js)."""

    def __init__(self, value: str, history: LossHistory):
        super().__init__(value)
        self.history = history

    def as_dict(self):
        return dict(super().as_dict(), **{UI_KEY: [self.history.as_dict()]})
