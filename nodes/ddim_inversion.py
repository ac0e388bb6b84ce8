"""DDIM inversion nodes: a one-node inverter and the same inversion as a SAMPLER."""
from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..adapters.checks import checked_latent, refuse_noise_mask, require_steps
from ..adapters.ddim import DDIMInversionSampler
from ..adapters.latent import INVERSION_KEY, InversionInfo
from ..adapters.run import run_with_cfg_guider
from .common import CATEGORY, display, node_id


class DDIMInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DDIMInvert"),
            display_name=display("DDIM Invert"),
            category=f"{CATEGORY}/inversion",
            description=(
                "Deterministic DDIM inversion: turns an image latent into the noise latent from which the stock "
                "samplers regenerate it. Feed the output to SamplerCustom (add_noise off) or KSamplerAdvanced "
                "(add_noise disable) with the SAME sigmas/scheduler, sampler euler or ddim, and the same model, "
                "prompts and cfg. cfg 1 reconstructs best; larger cfg drifts (use EDICT for exact inversion). Flow "
                "models (SD3, Flux) too, with a schedule that stops below σ = 1 (denoise < 1)."),
            inputs=[
                io.Model.Input("model", tooltip="The model to invert with (SD1.x/SD2.x/SDXL, and flow models: SD3, Flux)."),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image (or an empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt; only used when cfg != 1."),
                io.Latent.Input("latent", tooltip="The image latent to invert (VAE Encode output)."),
                io.Sigmas.Input("sigmas", tooltip=(
                    "Noise levels, e.g. from BasicScheduler; regenerate with exactly the same list. A "
                    "FlipSigmas'd list works too.")),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Classifier-free guidance scale used while inverting; regenerate with the same value. "
                    "1.0 gives the most faithful reconstruction.")),
            ],
            outputs=[io.Latent.Output(display_name="noise_latent", tooltip=(
                "The inverted noise, in VAE space, with the inversion settings attached."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, sigmas, cfg) -> io.NodeOutput:
        who = display("DDIM Invert")
        samples = checked_latent(model, latent, who, flow=True)
        require_steps(sigmas, who)
        refuse_noise_mask(latent, who)
        inverted = run_with_cfg_guider(model, positive, negative, cfg, DDIMInversionSampler(), samples, sigmas)
        out = latent.copy()
        out["samples"] = inverted.to(comfy.model_management.intermediate_device())
        out[INVERSION_KEY] = InversionInfo.of(model, sigmas, cfg, samples.shape).to_dict()
        return io.NodeOutput(out)


class SamplerDDIMInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("SamplerDDIMInversion"),
            display_name=display("DDIM Inversion Sampler"),
            category=f"{CATEGORY}/inversion",
            description=(
                "DDIM inversion as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: the sampler node's output "
                "is the noise latent of the input image. Use DisableNoise (or add_noise off): inversion ignores "
                "added noise. Give it the same sigmas the regeneration will use."),
            inputs=[],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(DDIMInversionSampler())


NODES = [DDIMInvert, SamplerDDIMInversion]
