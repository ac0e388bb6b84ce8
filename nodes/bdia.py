"""BDIA nodes: the SAMPLER, the inverter and the regeneration from an inverted pair (the schedule: EDICT Sigmas or any
scheduler)."""
from __future__ import annotations

from comfy_api.latest import io

from ..adapters.bdia import BDIAInversionSampler, BDIAOptions, BDIASampler
from ..adapters.checks import checked_latent, refuse_noise_mask, require_steps
from ..adapters.edict import check_edict_pair, pair_latent, start_pair
from ..adapters.latent import InversionInfo, to_vae_space, without_pair
from ..adapters.run import run_with_cfg_guider
from ..samplers import bdia, edict
from .common import CATEGORY, display, node_id

SUBCATEGORY = f"{CATEGORY}/bdia"


def _gamma_input(invert: bool) -> io.Float.Input:
    tip = ("How much of the backward DDIM step replaces the previous step's forward one: 0 is DDIM, 1 the symmetric "
           "(leapfrog) step; 0.5 is the paper's.")
    if invert:
        tip += (" Inversion divides by gamma each step, so the inverted pair grows by (1/gamma)^steps: the round trip "
                f"stays exact up to {bdia.max_steps(0.5)} steps at 0.5 ({bdia.max_steps(0.8)} at 0.8); beyond, a "
                "warning says it is approximate. A small gamma edits more conservatively (the edit acts late, where "
                "the grown mode has died down). Inversion and regeneration must agree.")
    return io.Float.Input("gamma", default=bdia.DEFAULT_GAMMA, min=0.01 if invert else 0.0, max=1.0, step=0.01,
                          round=0.0001, tooltip=tip)


def _state_input() -> io.Combo.Input:
    return io.Combo.Input("state_dtype", options=list(edict.STATE_DTYPES), default="float64", tooltip=(
        "Precision of the state and its arithmetic (the model keeps its own dtype). float64 round-trips exactly; "
        "float32 approximately."))


class SamplerBDIA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("SamplerBDIA"),
            display_name=display("BDIA Sampler"),
            category=SUBCATEGORY,
            description=(
                "BDIA as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: one model evaluation a step, like DDIM, "
                "and exactly invertible (BDIA Invert). A DDIM step first, then each step combines a forward and a "
                "backward DDIM step from the same prediction. Deterministic; use EDICT Sigmas or any scheduler "
                "(at least two steps). To regenerate an inverted image use BDIA Regenerate."),
            inputs=[_gamma_input(invert=False), _state_input()],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, gamma, state_dtype) -> io.NodeOutput:
        return io.NodeOutput(BDIASampler(BDIAOptions(gamma, state_dtype)))


class BDIAInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("BDIAInvert"),
            display_name=display("BDIA Invert"),
            category=SUBCATEGORY,
            description=(
                "Exact inversion at DDIM's cost: turns an image latent into the BDIA pair (z_T, z_T−1) from which "
                "BDIA Regenerate rebuilds the latent to float precision, with the same or another prompt. One model "
                "evaluation a step (EDICT needs two). The LATENT carries z_T as its samples, z_T−1 and the settings "
                "alongside; regenerate with the same sigmas and gamma."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "SD1.x/SD2.x/SDXL (ε- or v-prediction) or a flow model (SD3, Flux: the flow Euler step).")),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image (the edit's source)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (usually empty); used when cfg != 1."),
                io.Latent.Input("latent", tooltip="The image latent (VAE Encode output)."),
                io.Sigmas.Input("sigmas", tooltip="From EDICT Sigmas (or any scheduler); strength < 1 for edits."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance while inverting. Exactness holds at any cfg.")),
                _gamma_input(invert=True), _state_input(),
            ],
            outputs=[io.Latent.Output(display_name="pair", tooltip=(
                "z_T in 'samples', z_T−1 and the settings alongside; connect to BDIA Regenerate."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, sigmas, cfg, gamma, state_dtype) -> io.NodeOutput:
        who = display("BDIA Invert")
        samples = checked_latent(model, latent, who, flow=True)
        require_steps(sigmas, who)
        refuse_noise_mask(latent, who)
        bdia.check_bdia_schedule(sigmas, who)
        bdia.check_gamma(gamma, who)
        bdia.check_growth(gamma, sigmas.numel() - 1, who)  # refuses an overflow now; the warning comes with the run
        options = BDIAOptions(gamma, state_dtype)
        dtype = edict.STATE_DTYPES[state_dtype]
        sampler = BDIAInversionSampler(options, start=model.model.process_latent_in(samples.to(dtype)))
        run_with_cfg_guider(model, positive, negative, cfg, sampler, samples, sigmas)
        info = InversionInfo.of(model, sigmas, cfg, samples.shape, method="bdia", state_dtype=state_dtype,
                                **options.exactness_settings())
        z_t, z_t1 = sampler.pair
        return io.NodeOutput(pair_latent(model, z_t, z_t1, sigmas[0], info, base=latent, sigma_y=sigmas[1]))


class BDIARegenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("BDIARegenerate"),
            display_name=display("BDIA Regenerate"),
            category=SUBCATEGORY,
            description=(
                "Denoises an inverted BDIA pair back to an image latent. With the inversion's prompt and cfg it "
                "reproduces the image to float precision; with another prompt it edits it. gamma, sigmas and the "
                "model family must equal the inversion's (checked)."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for the inversion (same family; checked)."),
                io.Conditioning.Input("positive", tooltip="The same prompt to reconstruct, a new one to edit."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (usually the inversion's)."),
                io.Latent.Input("pair", tooltip="The output of BDIA Invert."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance; the inversion's value reconstructs exactly.")),
                _gamma_input(invert=True),
                io.Sigmas.Input("sigmas", optional=True, tooltip=(
                    "Leave unconnected to use the inversion's; if connected it must be the same list.")),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="z_0, the regenerated image latent.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, pair, cfg, gamma, sigmas=None) -> io.NodeOutput:
        who = display("BDIA Regenerate")
        info = InversionInfo.from_latent(pair)
        options = BDIAOptions(gamma, (info and info.state_dtype) or "float64")
        sigmas = check_edict_pair(info, model, sigmas, options, who, method="bdia")
        samples = checked_latent(model, pair, who, flow=True)
        sampler = BDIASampler(options, pair=start_pair(model, pair, sigmas[0], who, sigma_y=sigmas[1]))
        run_with_cfg_guider(model, positive, negative, cfg, sampler, samples, sigmas)
        return io.NodeOutput(dict(without_pair(pair), samples=to_vae_space(model, sampler.result("x"))))


NODES = [SamplerBDIA, BDIAInvert, BDIARegenerate]
