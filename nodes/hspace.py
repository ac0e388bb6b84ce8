"""h-space (Asyrp) nodes: apply a direction to a MODEL, the asymmetric SAMPLER, directions from prompts, combine,
save and load."""
from __future__ import annotations

import os
from pathlib import Path

import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from .. import artifacts
from ..hooks.hspace import (APPLY_TO, MODES, REDUCE, SPATIAL_POLICIES, Direction, HSpaceError, HSpacePatch,
                            HSpaceRecorder, combine, reduce_levels)
from ..hooks.unet_split import SharedEncoder
from ..samplers.comfy_sampler import AsyrpSampler, DDIMInversionSampler, model_family
from .common import CATEGORY, checked_latent, display, node_id, run_with_cfg_guider

SUBCATEGORY = f"{CATEGORY}/hspace"
FOLDER = "hspace_directions"
HSpaceDirection = io.Custom("INVEDIT_HSPACE_DIRECTION")

if FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})


def require_unet(model, who: str):
    unet = model.get_model_object("diffusion_model")
    if getattr(unet, "middle_block", None) is None:
        raise ValueError(f"{who}: {model_family(model.model)} has no U-Net middle block, so no h-space (SD3, Flux and "
                         f"other transformer models have no bottleneck). Use an SD1.x/SD2.x/SDXL checkpoint.")
    return unet


def t_to_sigma(model, t: int) -> float:
    return float(model.get_model_object("model_sampling").sigma(torch.tensor(int(t))))


class HSpaceApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceApply"),
            display_name=display("h-space Apply Direction"),
            category=SUBCATEGORY,
            description=(
                "Adds strength·Δh to the U-Net bottleneck (the middle block's output) while the timestep is in "
                "[t_edit, t_start]. asymmetric (the paper's Asyrp): sample with the Asyrp Sampler, which takes the "
                "predicted x0 from the shifted model and the noise direction from the unshifted one. symmetric: "
                "works with any sampler but is several times weaker per step. Chain several to combine."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL (a U-Net with a middle block)."),
                HSpaceDirection.Input("direction", tooltip="From h-space Direction From Prompts, Load or Combine."),
                io.Float.Input("strength", default=1.0, min=-20.0, max=20.0, step=0.05, tooltip=(
                    "Multiplies Δh; negative reverses the edit, 0 leaves the model unchanged.")),
                io.Int.Input("t_start", default=999, min=0, max=999, tooltip=(
                    "Upper end of the window, in the model's timesteps (999 = from pure noise).")),
                io.Int.Input("t_edit", default=500, min=0, max=999, tooltip=(
                    "Lower end of the window: the edit stops below this timestep (paper: ~500 of 1000; lower "
                    "edits more and risks artefacts, higher edits less).")),
                io.Combo.Input("mode", options=list(MODES), default="asymmetric", tooltip=(
                    "asymmetric: the Asyrp step (needs the Asyrp Sampler). symmetric: any sampler, weaker.")),
                io.Combo.Input("apply_to", options=list(APPLY_TO), default="both", tooltip=(
                    "Shift the cond and uncond passes (both: edit size independent of cfg) or only one.")),
                io.Combo.Input("spatial_mode", options=list(SPATIAL_POLICIES), default="resize", tooltip=(
                    "If the direction was made at another resolution: resize it (bilinear), use its per-channel "
                    "mean, or refuse (strict).")),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, direction, strength, t_start, t_edit, mode, apply_to, spatial_mode) -> io.NodeOutput:
        who = display("h-space Apply Direction")
        unet = require_unet(model, who)
        if t_edit > t_start:
            raise ValueError(f"{who}: t_edit ({t_edit}) is above t_start ({t_start}); the window is t_start ≥ t ≥ "
                             f"t_edit.")
        family = model_family(model.model)
        want = unet.middle_block[-1].out_channels if hasattr(unet.middle_block[-1], "out_channels") else None
        if want is not None and direction.channels != want:
            raise ValueError(f"{who}: the direction has {direction.channels} channels but {family}'s h-space has "
                             f"{want}; it was made for {direction.meta.get('family', 'another model')}.")
        if direction.meta.get("family") and direction.meta["family"] != family:
            raise ValueError(f"{who}: the direction was made with a {direction.meta['family']} model, this is "
                             f"{family}; h-space directions are specific to a model family.")
        m = model.clone()
        m.set_model_output_block_patch(HSpacePatch(direction, strength, t_to_sigma(model, t_start),
                                                   t_to_sigma(model, t_edit), mode, apply_to, spatial_mode))
        kind, key = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "invedit_hspace_shared_encoder"
        if mode == "asymmetric" and not comfy.patcher_extension.get_wrappers_with_key(kind, key, m.model_options,
                                                                                     is_model_options=True):
            comfy.patcher_extension.add_wrapper_with_key(kind, key, SharedEncoder(), m.model_options,
                                                         is_model_options=True)
        return io.NodeOutput(m)


class SamplerAsyrp(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("SamplerAsyrp"),
            display_name=display("Asyrp Sampler"),
            category=SUBCATEGORY,
            description=(
                "The Asyrp generative process as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: inside an "
                "h-space edit window each step takes P_t from the shifted model and D_t from the unshifted one; "
                "deterministic DDIM after it; DDIM with η=1 noise below t_boost (quality boosting). Without an "
                "h-space patch it is plain DDIM (= euler)."),
            inputs=[
                io.Int.Input("t_boost", default=0, min=0, max=999, tooltip=(
                    "Below this timestep add fresh noise each step (η below); 0 = never (fully deterministic, needed "
                    "to regenerate an inverted image exactly). Paper: ~200 of 1000.")),
                io.Float.Input("eta_boost", default=1.0, min=0.0, max=1.0, step=0.05, tooltip=(
                    "Noise amount η in the boost interval (1.0 = the paper's).")),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, t_boost, eta_boost) -> io.NodeOutput:
        return io.NodeOutput(AsyrpSampler(t_boost, eta_boost))


def _reduce_input():
    return io.Combo.Input("reduce", options=list(REDUCE), default="per_timestep", tooltip=(
        "per_timestep: one Δh per step, looked up by noise level. global: their mean, for all t."))


class HSpaceFromPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceFromPrompts"),
            display_name=display("h-space Direction From Prompts"),
            category=SUBCATEGORY,
            description=(
                "Δh_t = mean over samples of h(x_t, target) − h(x_t, source) along deterministic DDIM trajectories "
                "of the source prompt (stock sampler and guider). Needs no training; apply it with h-space Apply "
                "Direction. An empty latent sets the resolution and the number of samples."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL."),
                io.Conditioning.Input("source", tooltip="What the images are, e.g. 'a red circle'."),
                io.Conditioning.Input("target", tooltip="What they should become, e.g. 'a blue circle'."),
                io.Latent.Input("latent", tooltip="Empty latent: size = resolution, batch = number of samples."),
                io.Int.Input("steps", default=40, min=2, max=200, tooltip="DDIM steps of the recorded trajectories."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise of the trajectories."),
                _reduce_input(),
            ],
            outputs=[HSpaceDirection.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, model, source, target, latent, steps, seed, reduce) -> io.NodeOutput:
        who = display("h-space Direction From Prompts")
        require_unet(model, who)
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        m = model.clone()
        rec = HSpaceRecorder()
        m.set_model_output_block_patch(rec)
        m.model_options["disable_cfg1_optimization"] = True  # also run the "negative" (= target) at cfg 1
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds(source, target)  # chunk 0 = source (cond), 1 = target (uncond); cfg 1 follows the source
        guider.set_cfg(1.0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps)
        noise = comfy.sample.prepare_noise(samples, seed)
        guider.sample(noise, samples, comfy.samplers.sampler_object("euler"), sigmas.cpu(),
                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        delta, levels = reduce_levels(*rec.difference(), reduce)
        meta = {"kind": f"prompts_{reduce}", "family": model_family(model.model), "steps": str(steps),
                "samples": str(samples.shape[0]), "name": "prompts"}
        return io.NodeOutput(Direction(delta, levels, meta))


class HSpaceFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceFromImages"),
            display_name=display("h-space Direction From Images"),
            category=SUBCATEGORY,
            description=(
                "Δh_t = mean h_t over image set B − mean h_t over image set A (supervised class-mean difference): "
                "every image is DDIM-inverted with the neutral prompt at cfg 1, then its DDIM trajectory is replayed "
                "while h is recorded at each step. Sets of a few images with and without an attribute suffice."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL."),
                io.Latent.Input("set_a", tooltip="Images without the attribute (VAE Encode of a batch)."),
                io.Latent.Input("set_b", tooltip="Images with it, same resolution."),
                io.Conditioning.Input("neutral", tooltip="A prompt for both sets (or an empty prompt)."),
                io.Int.Input("steps", default=40, min=2, max=200, tooltip="DDIM steps of inversion and replay."),
                _reduce_input(),
            ],
            outputs=[HSpaceDirection.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, model, set_a, set_b, neutral, steps, reduce) -> io.NodeOutput:
        who = display("h-space Direction From Images")
        require_unet(model, who)
        a, b = (checked_latent(model, s, who) for s in (set_a, set_b))
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"{who}: the sets differ in resolution ({tuple(a.shape[2:])} vs {tuple(b.shape[2:])}); "
                             f"encode both at one size.")
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform",
                                                 steps).cpu()
        means = []
        for samples in (a, b):
            noise = run_with_cfg_guider(model, neutral, neutral, 1.0, DDIMInversionSampler(), samples, sigmas)
            m = model.clone()
            rec = HSpaceRecorder()
            m.set_model_output_block_patch(rec)
            run_with_cfg_guider(m, neutral, neutral, 1.0, comfy.samplers.sampler_object("euler"), noise, sigmas)
            means.append(rec.means(0))
        (mean_a, levels), (mean_b, _) = means
        delta, levels = reduce_levels(mean_b - mean_a, levels, reduce)
        meta = {"kind": f"images_{reduce}", "family": model_family(model.model), "steps": str(steps),
                "samples": f"{a.shape[0]}+{b.shape[0]}", "name": "images"}
        return io.NodeOutput(Direction(delta, levels, meta))


class HSpaceCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceCombine"),
            display_name=display("h-space Combine Directions"),
            category=SUBCATEGORY,
            description=(
                "weight_a·a + weight_b·b (h-space is linear). Interpolate with weights (1−α, α); negative weights "
                "subtract. Chain for more than two."),
            inputs=[
                HSpaceDirection.Input("a", tooltip="First direction."),
                io.Float.Input("weight_a", default=1.0, min=-20.0, max=20.0, step=0.05, tooltip="Its weight."),
                HSpaceDirection.Input("b", tooltip="Second direction (same model and resolution)."),
                io.Float.Input("weight_b", default=1.0, min=-20.0, max=20.0, step=0.05, tooltip=(
                    "Its weight; (1−α, α) interpolates, a negative weight subtracts.")),
            ],
            outputs=[HSpaceDirection.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, a, weight_a, b, weight_b) -> io.NodeOutput:
        if a.meta.get("family") and b.meta.get("family") and a.meta["family"] != b.meta["family"]:
            raise ValueError(f"{display('h-space Combine Directions')}: a was made with {a.meta['family']}, b with "
                             f"{b.meta['family']}; combine directions of one model family.")
        try:
            return io.NodeOutput(combine([(a, weight_a), (b, weight_b)]))
        except HSpaceError as e:
            raise ValueError(f"{display('h-space Combine Directions')}: {e}") from None


class HSpaceSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceSave"),
            display_name=display("h-space Save Direction"),
            category=SUBCATEGORY,
            description=f"Saves a direction as safetensors (with its metadata) in models/{FOLDER}/.",
            inputs=[HSpaceDirection.Input("direction", tooltip="The direction to save."),
                    io.String.Input("name", default="my_direction", tooltip="File name (no folders).")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, direction, name) -> io.NodeOutput:
        who = display("h-space Save Direction")
        fname = artifacts.safe_file_name(name, who)
        path = artifacts.save_hspace(Path(folder_paths.get_folder_paths(FOLDER)[0]) / fname, direction.delta,
                                     direction.sigmas, direction.meta)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name}: {tuple(direction.delta.shape)}"))


class HSpaceLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceLoad"),
            display_name=display("h-space Load Direction"),
            category=SUBCATEGORY,
            description=f"Loads a direction saved in models/{FOLDER}/ (safetensors only; validated).",
            inputs=[io.Combo.Input("name", options=folder_paths.get_filename_list(FOLDER),
                                   tooltip=f"A .safetensors file in models/{FOLDER}/.")],
            outputs=[HSpaceDirection.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        who = display("h-space Load Direction")
        delta, sigmas, meta = artifacts.load_hspace(Path(folder_paths.get_full_path_or_raise(FOLDER, name)), who)
        return io.NodeOutput(Direction(delta, sigmas, meta))
