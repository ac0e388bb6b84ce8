"""EMS / CSDS nodes (spec ems_csds.md §4): the prompt triplet, the edit prompts encoded to one length, the text
manipulation, the CSDS guider, the all-in-one edit sampler, the latent linear edit and the SDE metric."""
from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
from comfy_api.latest import io, ui

from ..adapters import csds as ad
from ..adapters.checks import checked_latent
from ..adapters.latent import to_vae_space
from ..adapters.progress import LiveLoss
from ..optim import csds
from .common import CATEGORY, display, node_id
from .sockets import LossHistory

SUBCATEGORY = f"{CATEGORY}/ems"


def _csds_inputs() -> list:
    return [
        io.Int.Input("iterations", default=50, min=0, max=1000, tooltip=(
            "CSDS iterations on the noised latent before sampling; 0 = text-only EMS (the plain guider).")),
        io.Float.Input("lr_start", default=0.1, min=0.0, max=10.0, step=0.001, tooltip=(
            "Step size η of the first iteration, the paper's η: z′ ← z′ − η·∂CSDS with ∂CSDS the gradient of Eq. 2 "
            "(paper: 0.1, decaying to 0.01). Since pack 0.2 a value gives twice the step of 0.1.")),
        io.Float.Input("lr_end", default=0.01, min=0.0, max=10.0, step=0.001, tooltip="η of the last iteration."),
        io.Combo.Input("lr_schedule", options=list(csds.SCHEDULES), default="geometric", tooltip=(
            "How η falls from lr_start to lr_end (the paper says only 'adaptive, decaying').")),
        io.Float.Input("lambda_", default=0.5, min=0.0, max=10.0, step=0.01, display_name="lambda", tooltip=(
            "Weight λ of the constraint that holds the latent near z_t: 0.7–1 conservative (local edits), 0.1–0.3 "
            "aggressive (global ones). The displacement falls as 1/λ.")),
        io.Float.Input("csds_cfg", default=1.0, min=0.0, max=30.0, step=0.1, tooltip=(
            "Guidance inside CSDS (1 = none; ω multiplies the attribute term, so it divides λ by ω). Keep 1 for "
            "guidance-distilled models (Flux-dev).")),
        io.Combo.Input("direction", options=list(csds.DIRECTIONS), default="toward_attribute", tooltip=(
            "toward_attribute: step towards the attribute prompt's prediction (the paper's intent); literal_order: "
            "the opposite sign (the equation's term order).")),
        io.Combo.Input("grad_mode", options=list(csds.MODES), default="delta", tooltip=(
            "delta: Eq. 2's gradient as the paper computes it, 2·(residuals) with the model's Jacobian taken as the "
            "identity (no backward pass); autograd: Eq. 2's exact gradient through the model (a backward pass per "
            "iteration, much more memory). The same η in both.")),
        io.Combo.Input("step_space", options=["auto", "raw"], default="auto", tooltip=(
            "auto: scale the step by sqrt(1+σ0²) on ε/v models (VE latents) so η means the same as on flow models; "
            "raw: no scaling.")),
    ]


def _edit_inputs() -> list:
    """The model and the three conditionings of an EMS edit (CSDS Guider, Edit Sampler)."""
    return [io.Model.Input("model", tooltip="SD3/Flux (flow) or SD1.x/SDXL; frozen."),
            io.Conditioning.Input("positive", tooltip="c~ from EMS Text Manipulate."),
            io.Conditioning.Input("negative", tooltip="The negative prompt (c_negative)."),
            io.Conditioning.Input("attribute", tooltip="c_attr: the attribute-only prompt.")]


def _guider(model, positive, negative, attribute, cfg, live, iterations, lr_start, lr_end, lr_schedule, lambda_,
            csds_cfg, direction, grad_mode, step_space) -> "ad.CSDSGuider":
    config = csds.CSDSConfig(iterations, lr_start, lr_end, lr_schedule, lambda_, direction, grad_mode)
    guider = ad.CSDSGuider(model, config, csds_cfg, step_space, live)
    guider.set_conds(positive, negative, attribute)
    guider.set_cfg(cfg)
    return guider


class EMSPromptTriplet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSPromptTriplet"), display_name=display("EMS Prompt Triplet"), category=SUBCATEGORY,
            description=("The Extract step without an LLM: the source caption, the target = the source with only "
                         "the edited words replaced (whole words, any case), and the attribute-only prompt CSDS "
                         "pulls towards. instruction_template is a prompt to paste into your own captioner."),
            inputs=[
                io.String.Input("source_prompt", multiline=True, default="a red circle",
                                tooltip="A caption of the image."),
                io.String.Input("find", default="red", tooltip="The word(s) of the edited attribute."),
                io.String.Input("replace", default="blue", tooltip="What they become."),
                io.Boolean.Input("replace_all", default=False, tooltip="Every occurrence, not only the first."),
                io.String.Input("target_override", default="", tooltip="A target prompt used verbatim if set."),
                io.String.Input("attribute_prompt", default="", tooltip=(
                    "The attribute alone (e.g. 'blue'); empty = the replacement words.")),
            ],
            outputs=[io.String.Output(display_name="source_prompt"), io.String.Output(display_name="target_prompt"),
                     io.String.Output(display_name="attribute_prompt"),
                     io.String.Output(display_name="instruction_template")],
        )

    @classmethod
    def execute(cls, source_prompt, find, replace, replace_all, target_override, attribute_prompt) -> io.NodeOutput:
        try:
            target = target_override.strip() or csds.replace_words(source_prompt, find, replace, replace_all)
        except csds.CSDSError as e:  # the pure layer states the problem; the node names itself
            raise csds.CSDSError(f"{display('EMS Prompt Triplet')}: {e}") from None
        attr = attribute_prompt.strip() or replace.strip()
        template = csds.INSTRUCTION.format(feature=find.strip() or "the attribute", value=replace.strip() or "…")
        return io.NodeOutput(source_prompt, target, attr, template)


class EMSEncodeEditPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSEncodeEditPrompts"), display_name=display("EMS Encode Edit Prompts"),
            category=SUBCATEGORY,
            description=("Encodes the source, target, attribute and negative prompts; source and target are padded "
                         "to one token length first, so that their difference is the edit direction."),
            inputs=[io.Clip.Input("clip", tooltip="The model's text encoder (CLIPLoader / the checkpoint's)."),
                    io.String.Input("source_prompt", multiline=True, default="a red circle",
                                    tooltip="A caption of the image (EMS Prompt Triplet's source_prompt)."),
                    io.String.Input("target_prompt", multiline=True, default="a blue circle",
                                    tooltip="The caption with only the edited words changed."),
                    io.String.Input("attribute_prompt", default="blue",
                                    tooltip="The attribute alone, for CSDS; empty = the target prompt."),
                    io.String.Input("negative_prompt", default="", tooltip="The negative prompt (usually empty).")],
            outputs=[io.Conditioning.Output(display_name="c_source"), io.Conditioning.Output(display_name="c_target"),
                     io.Conditioning.Output(display_name="c_attr"), io.Conditioning.Output(display_name="c_negative")],
        )

    @classmethod
    def execute(cls, clip, source_prompt, target_prompt, attribute_prompt, negative_prompt) -> io.NodeOutput:
        return io.NodeOutput(*ad.encode_edit_prompts(clip, source_prompt, target_prompt, attribute_prompt,
                                                     negative_prompt, display("EMS Encode Edit Prompts")))


class EMSTextManipulate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSTextManipulate"), display_name=display("EMS Text Manipulate"), category=SUBCATEGORY,
            description=("c~ = c_source + α·(c_target − c_source) on the token and pooled embeddings (any α: 0 the "
                         "source, 1 the target, > 1 further, < 0 the other way). Chain through accumulate_onto for "
                         "several attributes: out = base + α·(target − source)."),
            inputs=[
                io.Conditioning.Input("source", tooltip="c_source from EMS Encode Edit Prompts."),
                io.Conditioning.Input("target", tooltip="c_target from EMS Encode Edit Prompts (the same length)."),
                io.Float.Input("alpha", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=(
                    "The editing degree α; large |α| corrupts unrelated attributes.")),
                io.Boolean.Input("edit_tokens", default=True, tooltip="Move the token embeddings."),
                io.Boolean.Input("edit_pooled", default=True, tooltip="Move the pooled embedding (the paper: both)."),
                io.Combo.Input("token_part", options=["all", "clip_part", "t5_part"], default="all", tooltip=(
                    "SD3: edit all tokens, only the CLIP block (the first 77·k) or only the T5 part.")),
                io.Combo.Input("length_mismatch", options=list(csds.LENGTH_POLICIES), default="zero_pad", tooltip=(
                    "When source and target differ in length (not from EMS Encode Edit Prompts).")),
                io.Conditioning.Input("accumulate_onto", optional=True, tooltip=(
                    "Another attribute's result to add this direction to (multi-attribute edits).")),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, source, target, alpha, edit_tokens, edit_pooled, token_part, length_mismatch,
                accumulate_onto=None) -> io.NodeOutput:
        return io.NodeOutput(ad.manipulate(source, target, alpha, edit_tokens, edit_pooled, token_part,
                                           length_mismatch, accumulate_onto, display("EMS Text Manipulate")))


class EMSCSDSGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSCSDSGuider"), display_name=display("EMS CSDS Guider"), category=SUBCATEGORY,
            description=("A GUIDER for SamplerCustomAdvanced: refines the noised latent at the first sigma with "
                         "constrained score distillation towards the attribute prompt, then samples with the "
                         "manipulated prompt. Use sigmas from the edit's start (BasicScheduler steps 50, denoise "
                         "0.75, or EMS Edit Sampler) and RandomNoise; the live loss chart shows the iterations."),
            inputs=[*_edit_inputs(),
                    io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="Guidance of the denoising (paper 7.5)."),
                    *_csds_inputs()],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, attribute, cfg, iterations, lr_start, lr_end, lr_schedule, lambda_,
                csds_cfg, direction, grad_mode, step_space) -> io.NodeOutput:
        return io.NodeOutput(_guider(model, positive, negative, attribute, cfg, LiveLoss("CSDS", "Eq. 2 loss"),
                                     iterations, lr_start, lr_end, lr_schedule, lambda_, csds_cfg, direction,
                                     grad_mode, step_space))


class EMSEditSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSEditSampler"), display_name=display("EMS Edit Sampler"), category=SUBCATEGORY,
            description=("EMS in one node: noise the image latent to the edit's start (strength of the steps), "
                         "refine it with CSDS towards the attribute prompt (iterations 0: text only), and denoise "
                         "with the manipulated prompt."),
            inputs=[*_edit_inputs(),
                    io.Latent.Input("latent_image", tooltip="The image latent (VAE Encode)."),
                    io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                                 tooltip="The forward noise (one draw, fixed through CSDS)."),
                    io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Steps of the whole schedule (50)."),
                    io.Float.Input("strength", default=0.75, min=0.01, max=1.0, step=0.01, tooltip=(
                        "How far into the forward process the edit starts (paper 0.75).")),
                    io.Combo.Input("strength_mode", options=["diffusers", "comfy_denoise"], default="diffusers",
                                   tooltip=("diffusers: start at index int(steps − strength·steps) of the full "
                                            "schedule (the paper's); comfy_denoise: the last round(steps·strength) "
                                            "steps.")),
                    io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="Guidance of the denoising (paper 7.5)."),
                    io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="euler",
                                   tooltip="The denoising sampler (paper: flow Euler)."),
                    io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                                   tooltip="The schedule (simple: ComfyUI's SD3 default, the model's shift)."),
                    *_csds_inputs()],
            outputs=[io.Latent.Output(display_name="latent"),
                     io.Latent.Output(display_name="refined_noisy_latent", tooltip="z'_t, for inspection."),
                     LossHistory.Output(display_name="loss_history")],
        )

    @classmethod
    def execute(cls, model, positive, negative, attribute, latent_image, seed, steps, strength, strength_mode, cfg,
                sampler_name, scheduler, iterations, lr_start, lr_end, lr_schedule, lambda_, csds_cfg, direction,
                grad_mode, step_space) -> io.NodeOutput:
        who = display("EMS Edit Sampler")
        samples = checked_latent(model, latent_image, who, flow=True)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()
        sigmas = sigmas[ad.start_index(steps, strength, strength_mode):]
        live = LiveLoss("CSDS", "Eq. 2 loss")
        guider = _guider(model, positive, negative, attribute, cfg, live, iterations, lr_start, lr_end, lr_schedule,
                         lambda_, csds_cfg, direction, grad_mode, step_space)
        noise = comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        out = guider.sample(noise, samples, comfy.samplers.sampler_object(sampler_name), sigmas,
                            denoise_mask=latent_image.get("noise_mask"),
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        refined = to_vae_space(model, guider.z_refined)
        res = guider.result
        text = (f"EMS: {len(sigmas) - 1} steps from σ {float(sigmas[0]):.3f}, "
                + ("text only (0 CSDS iterations)" if res is None else
                   f"CSDS {len(res.losses)} iterations, attribute gap {res.residuals[0]:.4f} → {res.residuals[-1]:.4f}"
                   f", |z' − z_t| RMS {float((guider.z_refined - guider.z_t).pow(2).mean().sqrt()):.4f}"))
        return io.NodeOutput(dict(latent_image, samples=out), dict(latent_image, samples=refined), live.history,
                             ui=live.ui(text))


class EMSLatentLinearEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSLatentLinearEdit"), display_name=display("EMS Latent Linear Edit"),
            category=SUBCATEGORY,
            description=("z0 + α·(z_ref − z0): the image-side direction from a reference image (the paper's Fig. 3b); "
                         "noised with the same seed it is z_t + α·(z~_t − z_t)."),
            inputs=[io.Latent.Input("latent_source", tooltip="The image to edit (VAE Encode)."),
                    io.Latent.Input("latent_reference", tooltip="An image with the wanted attribute (same size)."),
                    io.Float.Input("alpha", default=1.0, min=-10.0, max=10.0, step=0.01,
                                   tooltip="The degree: 0 the source, 1 the reference.")],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, latent_source, latent_reference, alpha) -> io.NodeOutput:
        a, b = latent_source["samples"], latent_reference["samples"]
        if a.shape != b.shape:
            raise csds.CSDSError(f"{display('EMS Latent Linear Edit')}: the latents differ in shape "
                                 f"({tuple(a.shape)} vs {tuple(b.shape)}); encode both images at one size with one VAE.")
        return io.NodeOutput(dict(latent_source, samples=csds.manipulate(a, b, alpha)))


class EMSSDEMetric(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EMSSDEMetric"), display_name=display("EMS SDE Metric"), category=SUBCATEGORY,
            is_output_node=True,
            description=("The Semantic Disentanglement mEtric (Eq. 1, lower is better): d(x, same)/d(x, flipped) + "
                         "d(x, flipped), the reconstructions from one noised latent under the image's own attribute "
                         "prompt and the flipped one; batch mean. d is the paper's L2 norm by default; the report "
                         "gives both the L2 and the per-pixel RMSE value."),
            inputs=[io.Image.Input("original", tooltip="The image x."),
                    io.Image.Input("recon_same", tooltip="Its reconstruction under its own attribute prompt."),
                    io.Image.Input("recon_flipped", tooltip="The reconstruction under the flipped prompt, same noise."),
                    io.Combo.Input("distance", options=list(csds.DISTANCES), default="l2", tooltip=(
                        "The distance d of the outputs: l2, the L2 norm over all pixels (the paper's Eq. 1, default), "
                        "or rmse, per pixel on [0, 1] (l2/sqrt(H·W·C); the default in pack 0.1). The report "
                        "prints both.")),
                    io.Float.Input("eps", default=1e-8, min=0.0, max=1.0, step=1e-8,
                                   tooltip="Guards the ratio when the flipped reconstruction equals x.")],
            outputs=[io.Float.Output(display_name="sde"), io.Float.Output(display_name="ratio_term"),
                     io.Float.Output(display_name="preservation_term"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, original, recon_same, recon_flipped, distance, eps) -> io.NodeOutput:
        try:
            values = {kind: csds.sde(original, recon_same, recon_flipped, kind, eps) for kind in csds.DISTANCES}
        except csds.CSDSError as e:  # the pure layer says "SDE: …"; the node names itself
            raise csds.CSDSError(f"{display('EMS SDE Metric')}: {str(e).removeprefix('SDE: ')}") from None
        names = {"l2": "L2 norm, the paper's Eq. 1", "rmse": "per-pixel RMSE"}
        n = original.shape[0]
        text = "\n".join(
            [f"SDE = ratio + preservation, {n} image{'s' if n != 1 else ''}; lower is better; outputs: {distance}"]
            + [f"SDE ({names[k]}) {t:.4f} = ratio {r:.4f} + preservation {p:.4f}" for k, (t, r, p) in values.items()])
        total, ratio, keep = values[distance]
        return io.NodeOutput(total, ratio, keep, text, ui=ui.PreviewText(text))


NODES = [EMSPromptTriplet, EMSEncodeEditPrompts, EMSTextManipulate, EMSCSDSGuider, EMSEditSampler,
         EMSLatentLinearEdit, EMSSDEMetric]
