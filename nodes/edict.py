"""EDICT nodes: the schedule, the SAMPLER, the inverter and the regeneration from an inverted pair."""
from __future__ import annotations

import logging

import comfy.samplers
from comfy_api.latest import io

from ..adapters.checks import checked_latent, refuse_noise_mask, require_steps
from ..adapters.checks import is_flow
from ..adapters.edict import (EDICT_OUTPUTS, FLOW_DEFAULT_SCHEDULER, EDICTInversionSampler, EDICTOptions, EDICTSampler,
                              check_edict_pair, default_sigmas, pair_latent, start_pair)
from ..adapters.latent import InversionInfo, to_vae_space, without_pair
from ..adapters.run import run_with_cfg_guider
from ..samplers import edict
from .common import CATEGORY, display, node_id

log = logging.getLogger(__name__)
OFFICIAL = "official_980_0"
SUBCATEGORY = f"{CATEGORY}/edict"


def _options_inputs(state_dtype: bool = True) -> list:
    inputs = [
        io.Float.Input("mix_p", default=edict.DEFAULT_P, min=0.5, max=1.0, step=0.005, round=0.0001, tooltip=(
            "Mixing weight p of the x/y averaging layer. 0.93 (paper); 0.9–0.97 work for 50 steps. Lower keeps x "
            "and y closer but amplifies inversion error by p^-2 per step; 1.0 disables mixing.")),
        io.Boolean.Input("leapfrog", default=True, tooltip=(
            "Alternate which copy is updated first on odd steps, as the official code does (needed to reproduce "
            "the authors' images). Inversion and regeneration must agree.")),
        io.Boolean.Input("official_input_scaling", default=True, tooltip=(
            "Feed the second sub-step's model input exactly as the reference code does. Both settings are exactly "
            "invertible, but only on reproduces the authors' chain (off gives other images); keep it on.")),
    ]
    if state_dtype:
        inputs.append(io.Combo.Input("state_dtype", options=list(edict.STATE_DTYPES), default="float64", tooltip=(
            "Precision of the x/y state and its arithmetic (the model keeps its own dtype). float64 inverts to "
            "~1e-12; float32 to ~1e-3 after a 50-step inversion.")))
    return inputs


class EDICTSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EDICTSigmas"),
            display_name=display("EDICT Sigmas"),
            category=SUBCATEGORY,
            description=(
                "Noise levels for EDICT. official_980_0 is the reference code's DDIM schedule (timesteps 980, 960, "
                "…, 0 for 50 steps, the last an identity step that only mixes); on a flow model (SD3, Flux) it is "
                "ComfyUI's simple scheduler with the model's own shift. Any ComfyUI scheduler works too. "
                "strength < 1 keeps only the last steps (editing: invert and regenerate with the same list)."),
            inputs=[
                io.Model.Input("model", tooltip="The model whose noise schedule is used."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Steps of the whole schedule."),
                io.Combo.Input("schedule", options=[OFFICIAL, *comfy.samplers.SCHEDULER_NAMES], default=OFFICIAL,
                               tooltip=("official_980_0: the EDICT reference code's DDIM timesteps, t = k·(1000 // "
                                        "steps); the same list as the reference only when steps divides 1000 (at "
                                        "30 steps the reference runs 31 timesteps from 990; a warning says so). On "
                                        "a flow model (SD3, Flux: no DDIM timesteps) it means 'simple' over the "
                                        "model's shifted σ (set the shift with ModelSamplingSD3/Flux). Or any "
                                        "ComfyUI scheduler.")),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Fraction of the steps used, counted from the clean end: int(steps·strength) steps. 1.0 "
                    "inverts to pure noise; 0.6–0.9 for prompt edits (the paper uses 0.8).")),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps, schedule, strength) -> io.NodeOutput:
        who = display("EDICT Sigmas")
        ms = model.get_model_object("model_sampling")
        if schedule == OFFICIAL and is_flow(ms):
            log.info("%s: a flow model has no DDIM timesteps; official_980_0 uses the %s scheduler with the model's "
                     "shift.", who, FLOW_DEFAULT_SCHEDULER)
            schedule = FLOW_DEFAULT_SCHEDULER
        if schedule == OFFICIAL:
            if not hasattr(ms, "sigmas"):
                raise ValueError(f"{who}: the official schedule needs a discrete-timestep model; pick a ComfyUI "
                                 f"scheduler instead.")
            ref = edict.reference_code_timesteps(steps, ms.sigmas.numel())
            if len(ref) != steps:
                log.warning("%s: %d steps do not divide %d, so official_980_0 differs from the EDICT reference "
                            "code's list (which then runs %d timesteps from %d); use a step count that divides %d "
                            "(10, 20, 25, 40, 50, …) for parity.", who, steps, ms.sigmas.numel(), len(ref), ref[0],
                            ms.sigmas.numel())
            try:
                return io.NodeOutput(default_sigmas(model, steps, strength))
            except ValueError as e:
                raise ValueError(f"{who}: {e}") from None
        sigmas = comfy.samplers.calculate_sigmas(ms, schedule, steps).cpu()
        try:
            return io.NodeOutput(edict.last_steps(sigmas, strength))
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None


class SamplerEDICT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("SamplerEDICT"),
            display_name=display("EDICT Sampler"),
            category=SUBCATEGORY,
            description=(
                "EDICT as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: two coupled latents x and y, each step "
                "two model evaluations, exactly invertible. Deterministic (no ancestral noise); use EDICT Sigmas "
                "or any scheduler. To regenerate an inverted image use EDICT Regenerate."),
            inputs=[*_options_inputs(),
                    io.Combo.Input("output", options=list(EDICT_OUTPUTS), default="x", tooltip=(
                        "Which latent to return: x, y (nearly equal after mixing) or their mean."))],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, mix_p, leapfrog, official_input_scaling, state_dtype, output) -> io.NodeOutput:
        return io.NodeOutput(EDICTSampler(EDICTOptions(mix_p, leapfrog, official_input_scaling, state_dtype, output)))


class EDICTInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EDICTInvert"),
            display_name=display("EDICT Invert"),
            category=SUBCATEGORY,
            description=(
                "Exact inversion: turns an image latent into the EDICT noise pair (x_T, y_T) from which EDICT "
                "Regenerate rebuilds the latent to float precision, with the same or another prompt. The LATENT "
                "carries the pair and the settings; regenerate with the same sigmas, mix_p and leapfrog."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "SD1.x/SD2.x/SDXL (ε- or v-prediction) or a flow model (SD3, Flux: the flow Euler step).")),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image (the edit's source)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (usually empty); used when cfg != 1."),
                io.Latent.Input("latent", tooltip="The image latent (VAE Encode output)."),
                io.Sigmas.Input("sigmas", tooltip="From EDICT Sigmas (or any scheduler); strength < 1 for edits."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance while inverting; 3 is the paper's choice for edits. Exactness holds at any cfg.")),
                *_options_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="pair", tooltip=(
                "x_T in 'samples', y_T and the settings alongside; connect to EDICT Regenerate."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, sigmas, cfg, mix_p, leapfrog, official_input_scaling,
                state_dtype) -> io.NodeOutput:
        who = display("EDICT Invert")
        samples = checked_latent(model, latent, who, flow=True)
        require_steps(sigmas, who)
        edict.check_inversion_steps(sigmas.numel() - 1, mix_p, who)  # before any model call
        refuse_noise_mask(latent, who)
        options = EDICTOptions(mix_p, leapfrog, official_input_scaling, state_dtype)
        dtype = edict.STATE_DTYPES[state_dtype]
        sampler = EDICTInversionSampler(options, start=model.model.process_latent_in(samples.to(dtype)))
        run_with_cfg_guider(model, positive, negative, cfg, sampler, samples, sigmas)
        info = InversionInfo.of(model, sigmas, cfg, samples.shape, method="edict", state_dtype=state_dtype,
                                **options.exactness_settings())
        zx, zy = sampler.pair
        return io.NodeOutput(pair_latent(model, zx, zy, sigmas[0], info, base=latent))


class EDICTRegenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("EDICTRegenerate"),
            display_name=display("EDICT Regenerate"),
            category=SUBCATEGORY,
            description=(
                "Denoises an inverted EDICT pair back to an image latent. With the inversion's prompt and cfg it "
                "reproduces the image to float precision; with another prompt it edits it. mix_p, leapfrog, sigmas "
                "and the model family must equal the inversion's (checked)."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for the inversion (same family; checked)."),
                io.Conditioning.Input("positive", tooltip="The same prompt to reconstruct, a new one to edit."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (usually the inversion's)."),
                io.Latent.Input("pair", tooltip="The output of EDICT Invert."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance; the inversion's value reconstructs exactly.")),
                *_options_inputs(state_dtype=False),
                io.Sigmas.Input("sigmas", optional=True, tooltip=(
                    "Leave unconnected to use the inversion's; if connected it must be the same list.")),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="x_0, the regenerated image latent."),
                     io.Latent.Output(display_name="latent_y", tooltip="y_0, its (nearly equal) twin.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, pair, cfg, mix_p, leapfrog, official_input_scaling,
                sigmas=None) -> io.NodeOutput:
        who = display("EDICT Regenerate")
        info = InversionInfo.from_latent(pair)
        options = EDICTOptions(mix_p, leapfrog, official_input_scaling, (info and info.state_dtype) or "float64")
        sigmas = check_edict_pair(info, model, sigmas, options, who)
        samples = checked_latent(model, pair, who, flow=True)
        sampler = EDICTSampler(options, pair=start_pair(model, pair, sigmas[0], who))
        run_with_cfg_guider(model, positive, negative, cfg, sampler, samples, sigmas)
        base = without_pair(pair)
        return io.NodeOutput(*(dict(base, samples=to_vae_space(model, sampler.result(k))) for k in ("x", "y")))


NODES = [EDICTSigmas, SamplerEDICT, EDICTInvert, EDICTRegenerate]
