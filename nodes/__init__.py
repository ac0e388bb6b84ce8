"""ComfyUI node classes (V3 schema). Nodes translate ComfyUI types to calls into samplers/, hooks/ and optim/;
no math lives here."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .ddim_inversion import DDIMInvert, SamplerDDIMInversion
from .doodl import (DOODLAestheticLoss, DOODLClassifierLoss, DOODLCLIPLoss, DOODLGuidanceSampler, DOODLLossCombine,
                    DOODLOptimize)
from .edict import EDICTInvert, EDICTRegenerate, EDICTSigmas, SamplerEDICT
from .hspace import (HSpaceApply, HSpaceCombine, HSpaceEstimateIntervals, HSpaceFromImages, HSpaceFromPrompts,
                     HSpaceLoad, HSpaceSave, HSpaceTrainDirection, SamplerAsyrp)
from .report import ReconstructionReport

NODES: list[type[io.ComfyNode]] = [DDIMInvert, SamplerDDIMInversion, EDICTSigmas, SamplerEDICT, EDICTInvert,
                                   EDICTRegenerate, HSpaceFromPrompts, HSpaceFromImages, HSpaceTrainDirection,
                                   HSpaceEstimateIntervals, HSpaceApply, SamplerAsyrp,
                                   HSpaceCombine, HSpaceSave, HSpaceLoad, DOODLCLIPLoss, DOODLClassifierLoss,
                                   DOODLAestheticLoss, DOODLLossCombine, DOODLOptimize, DOODLGuidanceSampler,
                                   ReconstructionReport]


class InvEditExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> InvEditExtension:
    return InvEditExtension()
