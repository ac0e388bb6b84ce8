"""StyleDiffusion nodes: invert a real image into per-step value embeddings (or null-text embeddings), play them
back on a MODEL, the grid as SIGMAS, prompt-to-prompt / P2Plus editing, save and load."""
from __future__ import annotations

import torch

import comfy.model_management
from comfy_api.latest import io, ui

from .. import artifacts
from ..adapters import stylediffusion as adapter
from ..adapters.checks import checked_latent, refuse_noise_mask
from ..adapters.clip import load_local_clip
from ..adapters.latent import InversionInfo
from ..adapters.progress import LiveLoss
from ..adapters.run import grad_context
from ..artifacts.stylediffusion import from_tensors, to_tensors
from ..hooks.attention import STEP_MATCH
from ..optim import stylediffusion as sd
from .common import CATEGORY, display, node_id
from .folders import VALUE_FOLDER, clip_folder, clip_folder_names, file_names, file_path, save_new
from .sockets import LossHistory, ValueEmbed

SUBCATEGORY = f"{CATEGORY}/stylediffusion"
VISION = "clip_vision input"


def _inner_inputs(inner: int, decay: float, lr: float):
    return [
        io.Int.Input("inner_steps", default=inner, min=1, max=1000, tooltip=(
            "K: optimiser iterations at the first step; step i runs ceil(K·e^(−decay·i)) (the official expression).")),
        io.Float.Input("inner_decay", default=decay, min=0.0, max=2.0, step=0.01, tooltip=(
            "decay of the iterations per step (official 0.1: 1015 in all for 30 steps; 0 = K every step).")),
        io.Float.Input("lr", default=lr, min=1e-6, max=1.0, step=0.001, tooltip=(
            "Adam learning rate at the first step, × (1 − lr_decay·i) at step i (official 0.01).")),
        io.Float.Input("lr_decay", default=0.01, min=0.0, max=0.1, step=0.001, tooltip="Official 0.01."),
        io.Float.Input("early_stop", default=1e-5, min=0.0, max=1.0, step=1e-6, tooltip=(
            "A step stops once its loss < early_stop + 2e-5·i (official).")),
    ]


def _checkpointing_input():
    return io.Boolean.Input("grad_checkpointing", default=False, optional=True, tooltip=(
        "Recompute the U-Net's blocks in each backward pass instead of keeping their activations: the same result, "
        "at most one more U-Net forward per iteration in time, about 0.4x the memory (the help page's figures; for "
        "SDXL at 1024² or a small GPU)."))


def _image_latent(model, latent: dict, who: str):
    """The one image's latent an inversion starts from (finite, no noise mask, the model's channels)."""
    samples = checked_latent(model, latent, who)
    refuse_noise_mask(latent, who)
    if samples.shape[0] != 1:
        raise ValueError(f"{who}: invert one image at a time (got a batch of {samples.shape[0]}); split the batch "
                         f"with Latent From Batch (batch_index i, length 1) and give each latent its own node")
    if not torch.isfinite(samples).all():
        raise ValueError(f"{who}: the LATENT contains NaN/inf values; encode the image again with VAE Encode")
    return samples


def _noise_latent(model, emb: sd.ValueEmbedding) -> dict:
    return {"samples": adapter.noise_latent(model, emb)}


def _summary(method: str, emb: sd.ValueEmbedding, losses: list) -> str:
    return (f"{method}: {emb.steps} steps at guidance {emb.guidance:g}, {emb.meta.get('iterations')} inner "
            f"iterations, loss {losses[0]:.3g} → {float(emb.meta.get('final_loss', 'nan')):.3g} at the last step")


class StyleDiffusionInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        folders = clip_folder_names()
        return io.Schema(
            node_id=node_id("StyleDiffusionInvert"),
            display_name=display("StyleDiffusion Invert"),
            category=SUBCATEGORY,
            description=(
                "Inverts a real image (StyleDiffusion, Li et al. 2023): DDIM-inverts it at guidance 1 along the "
                "official grid, then learns for every step a small network that maps the image's CLIP tokens to a "
                "scale and shift of the cond branch's cross-attention VALUE input (keys keep the caption), so that "
                "sampling at the chosen guidance retraces the inversion (latent loss + attention-map loss). The "
                "result edits with P2P Edit (InvEdit) without the image encoder or another inversion, and plays "
                "back on a MODEL with Value Embedding Apply. Note: the first run turns the loaded U-Net's "
                "inference-mode weights into ordinary tensors (same values) so that gradients pass through them."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL (frozen: only the mapping networks learn)."),
                io.Conditioning.Input("positive", tooltip="The image's caption (one word is enough, e.g. 'circle')."),
                io.Conditioning.Input("negative", tooltip=(
                    "The null prompt ∅ (encode an empty text); edits must use the same.")),
                io.Latent.Input("latent", tooltip="VAE Encode of the image."),
                io.Image.Input("image", tooltip="The same image, for its CLIP tokens."),
                io.Combo.Input("clip_name", options=[*folders, VISION], default=folders[0] if folders else VISION,
                               tooltip=("The image encoder: a transformers CLIP folder in models/invedit_clip/, or "
                                        "'clip_vision input' to use the clip_vision socket (any stock CLIP vision).")),
                io.Int.Input("steps", default=30, min=2, max=200, tooltip="T, the grid's steps (official 30)."),
                io.Float.Input("guidance", default=7.5, min=1.0, max=30.0, step=0.1, round=0.01, tooltip=(
                    "The CFG scale the reconstruction is optimised for (edits must use it; official 7.5).")),
                *_inner_inputs(100, 0.1, 0.01),
                io.Float.Input("attn_weight", default=1.0, min=0.0, max=100.0, step=0.1, tooltip=(
                    "Weight of the attention-map loss against the inversion's maps (official 1; 0 = latent only).")),
                io.Combo.Input("init", options=["identity", "official"], default="identity", tooltip=(
                    "identity: every network starts at scale 1, shift 0 (the plain model, a good start); official: "
                    "PyTorch's default init, as the paper's code.")),
                io.Boolean.Input("warm_start", default=True, tooltip="Start each step's network from the previous one."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip="The networks' initialisation."),
                _checkpointing_input(),
                io.ClipVision.Input("clip_vision", optional=True, tooltip=(
                    "A stock CLIP vision model (CLIP Vision Loader); used when clip_name is 'clip_vision input'.")),
            ],
            outputs=[ValueEmbed.Output(display_name="value_embed"),
                     io.Latent.Output(display_name="noise", tooltip=(
                         "The inverted noise latent (a stock sampler with added noise off starts there).")),
                     io.Latent.Output(display_name="reconstruction", tooltip="The optimised reconstruction."),
                     LossHistory.Output(display_name="loss_history", tooltip=(
                         "The loss of every inner iteration (also drawn live on this node)."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, image, clip_name, steps, guidance, inner_steps,
                inner_decay, lr, lr_decay, early_stop, attn_weight, init, warm_start, seed,
                clip_vision=None, grad_checkpointing=False) -> io.NodeOutput:
        who = display("StyleDiffusion Invert")
        samples = _image_latent(model, latent, who)
        if image.shape[0] != 1:
            raise ValueError(f"{who}: invert one image at a time (got a batch of {image.shape[0]} images); split the "
                             f"batch with Image From Batch (batch_index i, length 1)")
        if clip_name == VISION:
            if clip_vision is None:
                raise ValueError(f"{who}: clip_name is '{VISION}' but nothing is connected to clip_vision; connect a "
                                 f"CLIP Vision Loader or pick a CLIP folder")
            tokens = adapter.tokens_from_clip_vision(clip_vision, image)
        else:
            with grad_context():
                clip = load_local_clip(clip_folder(clip_name, who), who)
            tokens = adapter.tokens_from_local_clip(clip, image)
        schedule = sd.Schedule(inner=inner_steps, inner_decay=inner_decay, lr=lr, lr_decay=lr_decay,
                               stop_eps=early_stop, guidance=guidance, attn_weight=attn_weight)
        settings = adapter.InversionSettings("stylediffusion", schedule, init, warm_start, seed=seed,
                                             checkpointing=grad_checkpointing)
        return _run_inversion(model, positive, negative, samples, steps, tokens, settings, who,
                              "StyleDiffusion inversion", "L_rec + L_att", {"image_encoder": clip_name})


def _run_inversion(model, positive, negative, samples, steps, tokens, settings, who, method, label, extra):
    grid = adapter.official_grid_of(model, steps)
    live = LiveLoss(method, label)
    try:
        emb, recon, losses = adapter.invert(model, positive, negative, samples, grid, tokens, settings, who, live)
    except sd.InversionError as e:
        raise ValueError(f"{who}: {e}") from None
    emb.meta.update(extra)
    return io.NodeOutput(emb, _noise_latent(model, emb), {"samples": recon}, live.history,
                         ui=live.ui(_summary(method, emb, losses)))


class NullTextInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("NullTextInvert"),
            display_name=display("Null-text Invert"),
            category=SUBCATEGORY,
            description=(
                "Null-text inversion (Mokady et al. 2023): DDIM-inverts the image at guidance 1, then optimises the "
                "unconditional embedding of every step so that sampling at the chosen guidance retraces the "
                "inversion. Same outputs and uses as StyleDiffusion Invert (the value_embed socket carries either), "
                "no image encoder needed."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL (frozen)."),
                io.Conditioning.Input("positive", tooltip="The image's caption."),
                io.Conditioning.Input("negative", tooltip="The null prompt ∅ the embeddings start from (empty text)."),
                io.Latent.Input("latent", tooltip="VAE Encode of the image."),
                io.Int.Input("steps", default=50, min=2, max=200, tooltip="T, the grid's steps (paper 50)."),
                io.Float.Input("guidance", default=7.5, min=1.0, max=30.0, step=0.1, round=0.01, tooltip=(
                    "The CFG scale the reconstruction is optimised for (paper 7.5).")),
                *_inner_inputs(10, 0.0, 0.01),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip="Kept in the file's metadata."),
                _checkpointing_input(),
            ],
            outputs=[ValueEmbed.Output(display_name="value_embed"),
                     io.Latent.Output(display_name="noise", tooltip="The inverted noise latent."),
                     io.Latent.Output(display_name="reconstruction", tooltip="The optimised reconstruction."),
                     LossHistory.Output(display_name="loss_history", tooltip="The loss of every inner iteration.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, steps, guidance, inner_steps, inner_decay, lr, lr_decay,
                early_stop, seed, grad_checkpointing=False) -> io.NodeOutput:
        who = display("Null-text Invert")
        samples = _image_latent(model, latent, who)
        schedule = sd.Schedule(inner=inner_steps, inner_decay=inner_decay, lr=lr, lr_decay=lr_decay,
                               stop_eps=early_stop, guidance=guidance, attn_weight=0.0)
        settings = adapter.InversionSettings("null_text", schedule, seed=seed, checkpointing=grad_checkpointing)
        return _run_inversion(model, positive, negative, samples, steps, None, settings, who, "null-text inversion",
                              "L_rec", {})


class ValueSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ValueSigmas"),
            display_name=display("Value Embedding Sigmas"),
            category=SUBCATEGORY,
            description=(
                "The official StyleDiffusion / null-text grid as SIGMAS (t_i = (1000/T)·(T−1−i), ending at ᾱ_0, "
                "the last step an identity): with a value embedding, its own grid. euler on these SIGMAS is DDIM. "
                "denoise < 1 keeps the last steps (an SDEdit-style partial run)."),
            inputs=[io.Model.Input("model", tooltip="The model whose noise schedule is used."),
                    io.Int.Input("steps", default=30, min=1, max=200, tooltip="T (ignored with a value embedding)."),
                    io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                        "The fraction of the steps to keep (from the end).")),
                    ValueEmbed.Input("value_embed", optional=True, tooltip="Take the grid of this inversion.")],
            outputs=[io.Sigmas.Output(display_name="sigmas")],
        )

    @classmethod
    def execute(cls, model, steps, denoise, value_embed=None) -> io.NodeOutput:
        grid = value_embed.sigmas if value_embed is not None else adapter.official_grid_of(model, steps)
        keep = round(denoise * (grid.numel() - 1))
        return io.NodeOutput(grid[grid.numel() - 1 - keep:].float())


class ValueApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ValueApply"),
            display_name=display("Value Embedding Apply"),
            category=SUBCATEGORY,
            description=(
                "Plays an inversion back on a MODEL: StyleDiffusion's per-step value scale and shift on the cond "
                "branch's cross-attention (for the first τ_v of the steps), or null-text's per-step unconditional "
                "embeddings; steps are matched to the embedding's grid by σ. With the embedding's noise latent, "
                "its SIGMAS, euler and its guidance, a stock sampler reconstructs the image; other prompts edit "
                "it (without attention control: see P2P Edit)."),
            inputs=[io.Model.Input("model", tooltip="The model the image was inverted on."),
                    ValueEmbed.Input("value_embed", tooltip="From an Invert node or Value Embedding Load."),
                    io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05, tooltip=(
                        "StyleDiffusion: scale 1 + s·(A − 1), shift s·B (0 = the plain model).")),
                    io.Float.Input("tau_v", default=1.0, min=0.0, max=1.0, step=0.05, tooltip=(
                        "StyleDiffusion: the fraction of steps (from the noisiest) that use the learned values: "
                        "the steps i < T·τ_v, compared in floats as the official code (T 50, τ_v 0.14: 8 steps).")),
                    io.Combo.Input("apply_to", options=["cond", "cond+uncond"], default="cond", tooltip=(
                        "StyleDiffusion: which branch gets the values (the official code: cond).")),
                    io.Combo.Input("step_match", options=list(STEP_MATCH), default="nearest", tooltip=(
                        "A sampler step between two of the grid's: the nearest one's values, or a blend of both "
                        "(linear in log σ). On the grid itself both are exact."))],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, value_embed, strength, tau_v, apply_to, step_match="nearest") -> io.NodeOutput:
        return io.NodeOutput(adapter.apply_embedding(model, value_embed, strength, tau_v, apply_to,
                                                     display("Value Embedding Apply"), step_match))


def _inverted_levels(latent: dict, who: str):
    """The descending levels a DDIM-inverted noise latent was inverted along (its ``invedit_inversion`` record), or
    None for a latent without one; an EDICT or BDIA pair is refused (its x_T is not DDIM noise)."""
    info = InversionInfo.from_latent(latent)
    if info is None or not info.sigmas:
        return None
    if info.method != "ddim":
        raise ValueError(f"{who}: the latent is an {info.method.upper()} pair, not DDIM-inverted noise; regenerate it "
                         f"with {info.method.upper()} Regenerate, or connect DDIM Invert's noise")
    levels = torch.tensor(info.sigmas, dtype=torch.float32)
    return levels.flip(0) if levels[0] < levels[-1] else levels


def _require_same_levels(have, inverted, what: str, fix: str, who: str) -> None:
    """Refuse a schedule other than the one the noise latent was inverted along (P2P Edit would walk another and
    reconstruct nothing: latent MSE 6 against 0.03 on the shapes world)."""
    have = have.flatten().float().cpu()
    if have.numel() != inverted.numel() or not torch.allclose(have, inverted, rtol=1e-4, atol=0):
        raise ValueError(f"{who}: the noise latent was inverted along {inverted.numel() - 1} steps from "
                         f"{float(inverted[0]):.4g} to {float(inverted[-1]):.4g}, but {what} has {have.numel() - 1} "
                         f"from {float(have[0]):.4g} to {float(have[-1]):.4g}; {fix}")


class P2PEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("P2PEdit"),
            display_name=display("P2P Edit"),
            category=SUBCATEGORY,
            description=(
                "Prompt-to-prompt editing (Hertz et al.) with StyleDiffusion's P2Plus: samples the source and the "
                "target prompt side by side from the same noise; the target row takes the source's cross-attention "
                "maps (Replace: a word swap; Refine: words added, aligned as the official code) for the first τ_c "
                "of the steps, its self-attention for τ_s, and, in the unconditional branch, its self-attention for "
                "τ_u (P2Plus); LocalBlend keeps the source outside the blend words' attention (summed over the steps "
                "so far, as the official code). From a value embedding "
                "(StyleDiffusion or null-text: the target keeps the learned values for τ_v) or from any noise "
                "latent and SIGMAS (e.g. DDIM Invert: 'DDIM + P2P')."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL."),
                io.Clip.Input("clip", tooltip="Encodes and tokenises both prompts (word positions)."),
                io.Conditioning.Input("negative", tooltip="The null prompt of the inversion (empty text)."),
                io.String.Input("source_prompt", default="a red circle", tooltip="What the image shows."),
                io.String.Input("target_prompt", default="a blue circle", tooltip=(
                    "What it should show (Replace: same number of words).")),
                io.Combo.Input("edit", options=["replace", "refine"], default="replace", tooltip=(
                    "replace: swap words one for one; refine: the target adds (or drops) words, its tokens aligned "
                    "with the source's by the official global alignment.")),
                io.Float.Input("guidance", default=7.5, min=1.0, max=30.0, step=0.1, round=0.01, tooltip=(
                    "CFG scale (with a value embedding: its own).")),
                io.Float.Input("tau_v", default=0.5, min=0.0, max=1.0, step=0.05, tooltip=(
                    "The target keeps the learned values for the first τ_v of the steps (larger: more of the "
                    "source's look).")),
                io.Float.Input("tau_c", default=0.6, min=0.0, max=1.0, step=0.05, tooltip=(
                    "Cross-attention maps injected for the first τ_c of the steps.")),
                io.Float.Input("tau_s", default=0.6, min=0.0, max=1.0, step=0.05, tooltip=(
                    "Self-attention (cond branch) injected for the first τ_s of the steps.")),
                io.Float.Input("tau_u", default=0.0, min=0.0, max=1.0, step=0.05, tooltip=(
                    "P2Plus: self-attention of the unconditional branch injected for the first τ_u (0 = plain "
                    "P2P; 0.5 for larger structural edits).")),
                io.String.Input("blend_source", default="", tooltip=(
                    "LocalBlend words of the source (empty on both: off), e.g. 'circle'; every occurrence counts.")),
                io.String.Input("blend_target", default="", tooltip="LocalBlend words of the target."),
                io.Float.Input("blend_threshold", default=0.3, min=0.0, max=1.0, step=0.05, tooltip="Official 0.3."),
                io.Float.Input("blend_start", default=0.2, min=0.0, max=1.0, step=0.05, tooltip=(
                    "LocalBlend from this fraction of the steps (official 0.2); its mask comes from the attention "
                    "summed since the first step.")),
                io.String.Input("reweight_words", default="", tooltip="Target words whose attention is scaled."),
                io.Float.Input("reweight_factor", default=1.0, min=0.0, max=20.0, step=0.5, tooltip=(
                    "Their factor while the maps are injected (official examples 2 to 8).")),
                ValueEmbed.Input("value_embed", optional=True, tooltip="An inversion: its noise, grid and values."),
                io.Latent.Input("latent", optional=True, tooltip=(
                    "A noise latent (overrides the embedding's), e.g. from DDIM Invert along Value Embedding Sigmas "
                    "(its schedule comes with it).")),
                io.Sigmas.Input("sigmas", optional=True, tooltip="The steps (default: the embedding's grid)."),
            ],
            outputs=[io.Latent.Output(display_name="edited"),
                     io.Latent.Output(display_name="reconstruction", tooltip="The source row: the image again."),
                     io.Mask.Output(display_name="blend_mask", tooltip="The last LocalBlend mask (ones when off).")],
        )

    @classmethod
    def execute(cls, model, clip, negative, source_prompt, target_prompt, edit, guidance, tau_v, tau_c, tau_s, tau_u,
                blend_source, blend_target, blend_threshold, blend_start, reweight_words, reweight_factor,
                value_embed=None, latent=None, sigmas=None) -> io.NodeOutput:
        who = display("P2P Edit")
        inverted = _inverted_levels(latent, who) if latent is not None else None
        if sigmas is None:  # the schedule the noise latent was inverted along, else the embedding's grid
            sigmas = inverted if inverted is not None else (value_embed.sigmas.float() if value_embed else None)
        if sigmas is None:
            raise ValueError(f"{who}: connect a value_embed (from an Invert node or Load), or a noise latent from DDIM "
                             f"Invert (it carries its schedule), or a noise latent and its SIGMAS")
        if inverted is not None:
            _require_same_levels(sigmas, inverted, "the SIGMAS", "connect the SIGMAS DDIM Invert had, or leave sigmas "
                                 "unconnected (the latent's own schedule is used)", who)
            if value_embed is not None:  # the grid, or its end (a partial run: Value Embedding Sigmas, denoise < 1)
                grid = value_embed.sigmas.float()
                _require_same_levels(grid[max(0, grid.numel() - inverted.numel()):], inverted,
                                     "the value embedding's grid",
                                     "invert along Value Embedding Sigmas (DDIM Invert's sigmas input), or leave the "
                                     "latent unconnected (the embedding's own noise is used)", who)
        if value_embed is not None:
            adapter.check_embedding(value_embed, model, who, negative, guidance, sigmas)
        if latent is not None:
            samples = checked_latent(model, latent, who)
            if samples.shape[0] != 1:
                raise ValueError(f"{who}: one noise latent at a time (got a batch of {samples.shape[0]}); split the "
                                 f"batch with Latent From Batch (batch_index i, length 1) and give each latent its "
                                 f"own P2P Edit")
            x_T = model.model.process_latent_in(samples.float())
        elif sigmas.numel() < value_embed.sigmas.numel():
            raise ValueError(f"{who}: the SIGMAS are the last {sigmas.numel() - 1} of the embedding's "
                             f"{value_embed.steps} steps, and its noise latent is at the first; connect the latent at "
                             f"σ {float(sigmas[0]):.4g} (where the partial run starts), or use the embedding's whole grid")
        else:
            x_T = value_embed.x_T
        if sigmas.numel() < 2:
            raise ValueError(f"{who}: the SIGMAS hold no step")
        settings = adapter.EditSettings(edit, guidance, tau_v, tau_c, tau_s, tau_u, blend_source, blend_target,
                                        blend_threshold, blend_start, reweight_words, reweight_factor)
        try:
            recon, edited, mask = adapter.edit(model, clip, source_prompt, target_prompt, negative, x_T, sigmas,
                                               settings, who, value_embed)
        except ValueError as e:
            raise ValueError(e if str(e).startswith(who) else f"{who}: {e}") from None
        h, w = edited.shape[-2:]
        scale = 8
        out_mask = (torch.ones(1, h * scale, w * scale) if mask is None else
                    torch.nn.functional.interpolate(mask[None].float(), scale_factor=scale, mode="nearest")[0])
        return io.NodeOutput({"samples": edited}, {"samples": recon}, out_mask.to(comfy.model_management.
                                                                                 intermediate_device()))


class ValueSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ValueSave"),
            display_name=display("Value Embedding Save"),
            category=SUBCATEGORY,
            description=(f"Saves an inversion (StyleDiffusion or null-text) as safetensors in models/{VALUE_FOLDER}/: "
                         f"edit it again later without the image encoder or another inversion."),
            inputs=[ValueEmbed.Input("value_embed", tooltip="The inversion to save."),
                    io.String.Input("name", default="my_image", tooltip="File name (no folders).")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, value_embed, name) -> io.NodeOutput:
        tensors, meta = to_tensors(value_embed)
        path = save_new(VALUE_FOLDER, "stylediffusion", name, tensors, meta, display("Value Embedding Save"))
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name}: {value_embed.method}, {value_embed.steps} steps, "
                                               f"{meta.get('family', '?')}"))


class ValueLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ValueLoad"),
            display_name=display("Value Embedding Load"),
            category=SUBCATEGORY,
            description=f"Loads an inversion saved in models/{VALUE_FOLDER}/ (safetensors only; validated).",
            inputs=[io.Combo.Input("name", options=file_names(VALUE_FOLDER),
                                   tooltip=f"A .safetensors file in models/{VALUE_FOLDER}/.")],
            outputs=[ValueEmbed.Output(display_name="value_embed")],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        who = display("Value Embedding Load")
        return io.NodeOutput(from_tensors(*artifacts.load(file_path(VALUE_FOLDER, name), "stylediffusion", who)))


NODES = [StyleDiffusionInvert, NullTextInvert, ValueSigmas, ValueApply, P2PEdit, ValueSave, ValueLoad]
