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
WARNING_EVENT = "invedit.warning"
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


def warn(who: str, text: str) -> None:
    """A warning where the user looks: on the console and, where a frontend queued the prompt, as a toast
    (web/js/warnings.js, ``invedit.warning`` {node, text}): for a node that ran but whose result may not be what the
    user expects (another model than an artifact's, a guidance window no step of the schedule lies in)."""
    message = f"{who}: {text}"
    log.warning(message)
    ctx = get_executing_context()
    try:
        from server import PromptServer
        server = PromptServer.instance
        server.send_sync(WARNING_EVENT, {"node": getattr(ctx, "node_id", None), "text": message}, server.client_id)
    except Exception:   # no server (scripts, tests): the console has it
        pass


class NodeName:
    """The name a SAMPLER or GUIDER gives itself in messages (a class attribute ``WHO = NodeName(...)``): the display
    name of the pack's node that makes it and, while a prompt runs, the id of the node running it (the stock
    SamplerCustom or KSampler it was wired into), so an error raised inside a stock node names both."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, cls=None) -> str:
        ctx = get_executing_context()
        node = getattr(ctx, "node_id", None)
        return f"{self.name}, run by node #{node}" if node is not None else self.name
