"""RF-Solver and FireFlow SAMPLERs (flow models): sampling, or inversion with direction = invert."""
from __future__ import annotations

from comfy_api.latest import io

from ..adapters.flow_solvers import FlowSolverInversionSampler, flow_solver_sampler
from .common import CATEGORY, display, node_id

DIRECTIONS = ("sample", "invert")


def _direction() -> io.Combo.Input:
    return io.Combo.Input("direction", options=list(DIRECTIONS), default="sample", tooltip=(
        "sample: denoise along the SIGMAS (a regeneration or an edit, add_noise off after an inversion). invert: walk "
        "the SIGMAS from the lowest level up and return the noise latent of the input image, for a stock "
        "SamplerCustom with add_noise off to regenerate (a schedule that reaches σ = 1 is refused: use denoise < 1)."))


def _schema(nid: str, name: str, what: str) -> io.Schema:
    return io.Schema(
        node_id=nid,
        display_name=display(f"{name} Sampler"),
        category=f"{CATEGORY}/flow",
        description=(f"{name} as a SAMPLER for SamplerCustom / SamplerCustomAdvanced on flow-matching models (SD3, "
                     f"Flux, …): {what} Invert with direction = invert (DisableNoise / add_noise off), then sample "
                     f"with the same SIGMAS and a new prompt to edit. Approximate: its inversion drifts less than the "
                     f"Euler (DDIM) inversion's, not zero (BDIA and EDICT are exact)."),
        inputs=[_direction()],
        outputs=[io.Sampler.Output()],
    )


def _sampler(solver: str, direction: str):
    return FlowSolverInversionSampler(solver) if direction == "invert" else flow_solver_sampler(solver)


class SamplerRFSolver(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(node_id("SamplerRFSolver"), "RF-Solver", "the second-order Taylor step of the rectified-flow "
                       "ODE (two model evaluations a step).")

    @classmethod
    def execute(cls, direction) -> io.NodeOutput:
        return io.NodeOutput(_sampler("rf_solver", direction))


class SamplerFireFlow(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(node_id("SamplerFireFlow"), "FireFlow", "a midpoint step reusing the previous step's midpoint "
                       "velocity (one model evaluation a step, plus one).")

    @classmethod
    def execute(cls, direction) -> io.NodeOutput:
        return io.NodeOutput(_sampler("fireflow", direction))


NODES = [SamplerRFSolver, SamplerFireFlow]
