"""ComfyUI node classes (V3 schema). Nodes translate ComfyUI types to calls into adapters/ (and the pure layers);
no math lives here. Each module exports NODES; this list concatenates them in menu order."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import (bdia, caso, charts, csds, ddim_inversion, doodl, edict, flow_solvers, flowedit, hspace, report,
               stylediffusion)
from .common import add_conditioning_check, add_input_validation

NODES: list[type[io.ComfyNode]] = [add_conditioning_check(add_input_validation(n)) for n in (
    *ddim_inversion.NODES, *edict.NODES, *bdia.NODES, *flow_solvers.NODES, *flowedit.NODES,
    *hspace.NODES, *stylediffusion.NODES, *caso.NODES, *csds.NODES,
    *doodl.NODES, *report.NODES, *charts.NODES)]


class InvEditExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> InvEditExtension:
    return InvEditExtension()
