"""Loss Chart: an optimiser's loss history as an IMAGE (for Save Image / Preview Image and reports)."""
from __future__ import annotations

from comfy_api.latest import io

from ..plots import loss_chart
from .common import CATEGORY, display, node_id
from .sockets import LossHistory


class LossChart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LossChart"),
            display_name=display("Loss Chart"),
            category=CATEGORY,
            description=("Draws a loss history (the loss_history output of DOODL Optimize, h-space Train Direction "
                         "and the pack's other optimisers) as an image: the same curve the optimiser node shows "
                         "live while it runs."),
            inputs=[
                LossHistory.Input("loss_history", tooltip="From an optimiser node's loss_history output."),
                io.Int.Input("width", default=512, min=128, max=4096, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=256, min=96, max=4096, step=8, tooltip="Image height in pixels."),
                io.Boolean.Input("log_scale", default=False, tooltip="Plot log10 of the (positive) losses."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, loss_history, width, height, log_scale) -> io.NodeOutput:
        h = loss_history
        title = f"{h.method}: {h.label} ({len(h.values)} steps)"
        return io.NodeOutput(loss_chart(h.steps, h.values, title, width, height, log_scale))


NODES = [LossChart]
