"""h-space (Asyrp) nodes: apply a direction to a MODEL, the asymmetric SAMPLER, directions from prompts, images or
CLIP-loss training, combine, save and load."""
from __future__ import annotations

import json

import comfy.model_management
from comfy_api.latest import io, ui

from .. import artifacts, metrics
from ..adapters import hspace as adapter
from ..adapters.asyrp import AsyrpSampler
from ..adapters.checks import checked_latent
from ..adapters.clip import load_local_clip
from ..adapters.hspace_train import TrainSettings, train
from ..adapters.run import grad_context
from ..hooks.directions import REDUCE, SPATIAL_POLICIES, HSpaceError, combine, from_tensors, to_tensors
from ..hooks.hspace import APPLY_MODES, APPLY_TO
from ..losses.clip import plain_words
from ..optim.hspace import LOSSES, loss_summary
from .common import CATEGORY, display, node_id
from .folders import HSPACE_FOLDER, clip_folder, clip_folder_names, file_names, file_path, save_new
from .sockets import HSpaceDirection, LossHistory

SUBCATEGORY = f"{CATEGORY}/hspace"
DEFAULT_T_EDIT, DEFAULT_T_BOOST = 650, 200  # SD timesteps when no perceptual metric is available (see the help page)


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
                io.Combo.Input("mode", options=list(APPLY_MODES), default="asymmetric", tooltip=(
                    "asymmetric: the Asyrp step (needs the Asyrp Sampler). symmetric: any sampler, weaker.")),
                io.Combo.Input("apply_to", options=list(APPLY_TO), default="both", tooltip=(
                    "Shift the cond and uncond passes (both: edit size independent of cfg) or only one.")),
                io.Combo.Input("spatial_mode", options=list(SPATIAL_POLICIES), default="resize", tooltip=(
                    "If the direction was made at another resolution: resize it (bilinear), use its per-channel "
                    "mean, or refuse (strict).")),
                io.Boolean.Input("step_scaling", default=True, tooltip=(
                    "Trained directions only: scale f_t by this schedule's timestep spacing over the training's "
                    "(S_train/S_gen for uniform steps), so the total shift does not depend on the step count. "
                    "Directions from prompts or images are never scaled.")),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, direction, strength, t_start, t_edit, mode, apply_to, spatial_mode,
                step_scaling=True) -> io.NodeOutput:
        return io.NodeOutput(adapter.apply_direction(model, direction, strength, t_start, t_edit, mode, apply_to,
                                                     spatial_mode, step_scaling, display("h-space Apply Direction")))


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
                    "to regenerate an inverted image exactly). Paper: ~200 of 1000. Above t_edit, the edit steps "
                    "below t_boost get the noise too (the official code's rule).")),
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
        return io.NodeOutput(adapter.direction_from_prompts(model, source, target, latent, steps, seed, reduce,
                                                            display("h-space Direction From Prompts")))


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
        return io.NodeOutput(adapter.direction_from_images(model, set_a, set_b, neutral, steps, reduce,
                                                           display("h-space Direction From Images")))


class HSpaceTrainDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceTrainDirection"),
            display_name=display("h-space Train Direction (CLIP)"),
            category=SUBCATEGORY,
            description=(
                "Trains the paper's implicit direction f_t (Asyrp Sec. 3.4): a small network giving Δh_t from h_t "
                "and t, learnt with the directional CLIP loss between the predicted x0 with and without the shift "
                "(source text → target text) plus an L1 term that keeps the edit close, one Adam step per timestep "
                "in [999, t_edit]; loss picks the paper's form or the official code's. CLIP is a local "
                "transformers folder in models/invedit_clip/ (never downloaded). "
                "Apply the result with h-space Apply Direction and the Asyrp Sampler; save it with h-space Save "
                "Direction. Note: the first run turns the loaded U-Net's and VAE's inference-mode weights into "
                "ordinary tensors (same values) so that gradients can pass through them."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL (frozen; only f_t is trained)."),
                io.Vae.Input("vae", tooltip="Decodes the predicted x0 for CLIP (gradients pass through it)."),
                io.Combo.Input("clip_name", options=clip_folder_names(), tooltip=(
                    "A transformers CLIPModel folder in models/invedit_clip/ (config.json, model.safetensors, "
                    "tokenizer files), e.g. a ViT-B/16 as in the paper.")),
                io.Conditioning.Input("neutral", tooltip=(
                    "The prompt the U-Net sees while training (cfg 1; an empty prompt is the paper's unconditional "
                    "setting).")),
                io.Latent.Input("latent", tooltip=(
                    "init inverted: training images (VAE Encode of a batch), DDIM-inverted first. init random: an "
                    "Empty Latent Image whose batch size is the number of noise samples.")),
                io.String.Input("source_text", default="face", tooltip=(
                    "What the images are (for CLIP). With prompt_templates give the bare words, as the official "
                    "code's 'face': the templates wrap them ('a bad photo of a face.', …).")),
                io.String.Input("target_text", default="smiling face", tooltip=(
                    "What they should become ('smiling face').")),
                io.Combo.Input("init", options=["inverted", "random"], default="inverted", tooltip=(
                    "Start trajectories from the inverted images (preserves them better) or from Gaussian noise "
                    "(the paper's choice for attributes the model has not seen; edits more).")),
                io.Int.Input("steps", default=40, min=2, max=200, tooltip=(
                    "Training schedule S (paper 40); sampling with other step counts is rescaled by Apply.")),
                io.Int.Input("t_edit", default=500, min=0, max=998, tooltip=(
                    "Train the steps with t ≥ t_edit (apply with the same t_edit; h-space Estimate Edit Interval "
                    "can pick it).")),
                io.Float.Input("lambda_clip", default=0.8, min=0.0, max=10.0, step=0.05, tooltip=(
                    "Weight of the directional CLIP loss (paper: 0.8 for most attributes, up to 2 for big edits).")),
                io.Float.Input("recon_mult", default=3.0, min=0.0, max=20.0, step=0.1, tooltip=(
                    "L1 weight = recon_mult × cos(source, target text) (paper: 3).")),
                io.Float.Input("lr", default=0.003, min=1e-5, max=1.0, step=0.0005, tooltip=(
                    "Adam learning rate (the paper's SGD diverges with our zero-initialised f_t).")),
                io.Int.Input("epochs", default=1, min=1, max=100, tooltip="Passes over the samples (lr ×0.1 every 3)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Samples per optimiser step."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Initialisation of f_t and, for init random, the noise."),
                io.Combo.Input("loss", options=list(LOSSES), default="paper", optional=True, tooltip=(
                    "paper (default): λ_clip·L_dir from the unedited prediction P_t^src to the edited P_t^edit, "
                    "the paper's eq. 4/7 and the loss of earlier versions. official: the authors' code, "
                    "λ_clip·−log((2 − L_dir)/2) with the real image x0 as CLIP's source (init random: the plain "
                    "sample of the noise); its script uses lambda_clip 1, recon_mult 3. Both add "
                    "recon_mult·cos·|P_t^edit − P_t^src|.")),
                io.Boolean.Input("prompt_templates", default=True, optional=True, tooltip=(
                    "The text direction averaged over the official code's 79 prompt templates ('a bad photo of a "
                    "{}.', …; give bare words as the texts). Off: the bare texts' embeddings.")),
            ],
            outputs=[HSpaceDirection.Output(display_name="direction"),
                     LossHistory.Output(display_name="loss_history", tooltip=(
                         "The loss at every training step (also drawn live on this node); Loss Chart renders it."))],
        )

    @classmethod
    def execute(cls, model, vae, clip_name, neutral, latent, source_text, target_text, init, steps, t_edit,
                lambda_clip, recon_mult, lr, epochs, batch_size, seed, loss="paper",
                prompt_templates=True) -> io.NodeOutput:
        who = display("h-space Train Direction (CLIP)")
        plain_words(source_text, who, "source_text")
        plain_words(target_text, who, "target_text")
        settings = TrainSettings(source_text, target_text, init, steps, t_edit, lambda_clip, recon_mult, lr, epochs,
                                 batch_size, seed, loss, bool(prompt_templates))
        with grad_context():
            clip = load_local_clip(clip_folder(clip_name, who), who)
        direction, live = train(model, vae, clip, clip_name, neutral, latent, settings, who)
        first, last, k = loss_summary(live.history.values)
        text = (f"trained f_t: {len(live.history.values)} steps, loss {first:.4f} at the first step, {last:.4f} over "
                f"the last {k}")
        return io.NodeOutput(direction, live.history, ui=live.ui(text))


class HSpaceEstimateIntervals(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceEstimateIntervals"),
            display_name=display("h-space Estimate Edit Interval"),
            category=SUBCATEGORY,
            description=(
                "t_edit and t_boost as the paper picks them (Asyrp Sec. 4, App. G): DDIM-invert the images and "
                "measure, at each t, the mean LPIPS between each image and its predicted x0 P_t (t_edit: where it "
                "reaches edit_threshold × text_cosine) and its noisy latent x_t (t_boost: where it reaches "
                "boost_threshold). Needs the lpips package and torchvision's AlexNet weights already cached "
                "(nothing is downloaded); otherwise it returns the documented defaults 650 / 200 and says why."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL."),
                io.Vae.Input("vae", tooltip="Decodes P_t and x_t for the perceptual metric."),
                io.Latent.Input("latent", tooltip="Typical images of the domain (VAE Encode of a batch; paper: 100)."),
                io.Conditioning.Input("neutral", tooltip="The prompt of the inversion (cfg 1), e.g. an empty one."),
                io.Int.Input("steps", default=50, min=4, max=1000, tooltip="Inversion steps (curve resolution)."),
                io.Combo.Input("metric", options=["auto", "defaults"], default="auto", tooltip=(
                    "auto: LPIPS when available locally, else the defaults; defaults: skip the measurement.")),
                io.Float.Input("edit_threshold", default=0.33, min=0.01, max=2.0, step=0.01, tooltip=(
                    "LPIPS(x, P_t) at t_edit (paper 0.33).")),
                io.Float.Input("boost_threshold", default=1.2, min=0.01, max=5.0, step=0.05, tooltip=(
                    "LPIPS(x, x_t) at t_boost (paper 1.2).")),
                io.Float.Input("text_cosine", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "cos(CLIP(source text), CLIP(target text)); bigger edits (lower cosine) get a longer window.")),
            ],
            outputs=[io.Int.Output(display_name="t_edit"), io.Int.Output(display_name="t_boost"),
                     io.String.Output(display_name="curves")],
        )

    @classmethod
    def execute(cls, model, vae, latent, neutral, steps, metric, edit_threshold, boost_threshold,
                text_cosine) -> io.NodeOutput:
        who = display("h-space Estimate Edit Interval")
        samples = checked_latent(model, latent, who)
        distance, why = (metrics.local_lpips(comfy.model_management.get_torch_device()) if metric == "auto"
                         else (None, "metric set to defaults"))
        if distance is None:
            text = f"t_edit {DEFAULT_T_EDIT}, t_boost {DEFAULT_T_BOOST} (defaults: {why})"
            return io.NodeOutput(DEFAULT_T_EDIT, DEFAULT_T_BOOST,
                                 json.dumps({"source": "defaults", "why": why}), ui=ui.PreviewText(text))
        t_edit, t_boost, curves = adapter.measure_intervals(model, vae, samples, neutral, steps, distance,
                                                            edit_threshold, boost_threshold, text_cosine)
        return io.NodeOutput(t_edit, t_boost, json.dumps(curves),
                             ui=ui.PreviewText(f"t_edit {t_edit}, t_boost {t_boost} (LPIPS over "
                                               f"{samples.shape[0]} images, {steps} steps)"))


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
            description=f"Saves a direction as safetensors (with its metadata) in models/{HSPACE_FOLDER}/.",
            inputs=[HSpaceDirection.Input("direction", tooltip="The direction to save."),
                    io.String.Input("name", default="my_direction", tooltip="File name (no folders).")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, direction, name) -> io.NodeOutput:
        who = display("h-space Save Direction")
        try:
            tensors, meta = to_tensors(direction)
        except HSpaceError as e:
            raise ValueError(f"{who}: {e}") from None
        path = save_new(HSPACE_FOLDER, "hspace", name, tensors, meta, who)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name}: {meta.get('kind', '?')}, "
                                               f"{direction.channels} channels"))


class HSpaceLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HSpaceLoad"),
            display_name=display("h-space Load Direction"),
            category=SUBCATEGORY,
            description=f"Loads a direction saved in models/{HSPACE_FOLDER}/ (safetensors only; validated).",
            inputs=[io.Combo.Input("name", options=file_names(HSPACE_FOLDER),
                                   tooltip=f"A .safetensors file in models/{HSPACE_FOLDER}/.")],
            outputs=[HSpaceDirection.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        who = display("h-space Load Direction")
        try:
            return io.NodeOutput(from_tensors(*artifacts.load(file_path(HSPACE_FOLDER, name), "hspace", who)))
        except HSpaceError as e:
            raise ValueError(f"{who}: {name}: {e}") from None


NODES = [HSpaceFromPrompts, HSpaceFromImages, HSpaceTrainDirection, HSpaceEstimateIntervals, HSpaceApply, SamplerAsyrp,
         HSpaceCombine, HSpaceSave, HSpaceLoad]
