"""FlowEdit Guider: inversion-free editing on flow models, a GUIDER for the stock SamplerCustomAdvanced."""
from __future__ import annotations

from comfy_api.latest import io

from ..adapters.flowedit import FlowEditGuider as Guider
from .common import CATEGORY, display, node_id


class FlowEditGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("FlowEditGuider"),
            display_name=display("FlowEdit Guider"),
            category=f"{CATEGORY}/flow",
            description=(
                "FlowEdit (Kulikov et al., 2024): edits the LATENT image without inverting it, by integrating the "
                "difference of the target and source prompts' velocities taken at noised copies of the image. A "
                "GUIDER for SamplerCustomAdvanced: connect the source image's latent as latent_image and the model's "
                "scheduler (simple, T steps) as sigmas. FlowEdit integrates its own Euler ODE, so the SAMPLER input "
                "there is not used and the NOISE is replaced by the seed below. Flow models only (SD3, Flux, …)."),
            inputs=[
                io.Model.Input("model", tooltip="A flow-matching model (SD3, SD3.5, Flux, …)."),
                io.Conditioning.Input("source_positive", tooltip="A caption of the source image."),
                io.Conditioning.Input("source_negative", tooltip="Usually empty."),
                io.Conditioning.Input("target_positive", tooltip="The caption of the edit."),
                io.Conditioning.Input("target_negative", tooltip="Usually empty."),
                io.Float.Input("source_cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "CFG of the source velocity (official: 3.5 on SD3, 1.5 on Flux).")),
                io.Float.Input("target_cfg", default=13.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "CFG of the target velocity (official: 13.5 on SD3, 5.5 on Flux).")),
                io.Int.Input("n_max", default=33, min=1, max=1000, tooltip=(
                    "Edit only the last n_max of the T steps (official: 33 of 50 on SD3, 24 of 28 on Flux). Larger "
                    "allows larger changes of structure.")),
                io.Int.Input("n_min", default=0, min=0, max=1000, tooltip=(
                    "The last n_min steps sample the target plainly from the edited latent (official: 0).")),
                io.Int.Input("n_avg", default=1, min=1, max=16, tooltip=(
                    "Noise draws averaged per step (official: 1); each costs two model evaluations.")),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise FlowEdit draws at each step."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, source_positive, source_negative, target_positive, target_negative, source_cfg,
                target_cfg, n_max, n_min, n_avg, seed) -> io.NodeOutput:
        return io.NodeOutput(Guider(model, source_positive, source_negative, target_positive, target_negative,
                                    source_cfg, target_cfg, n_min, n_max, n_avg, seed))


NODES = [FlowEditGuider]
