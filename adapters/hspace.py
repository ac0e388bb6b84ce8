"""h-space on a ComfyUI model: apply a direction (a patched clone), make directions from prompts or image sets
(recorded along stock DDIM trajectories), and measure the perceptual curves the edit interval is read from."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
import comfy.utils

from ..hooks.directions import Direction, HSpaceError, reduce_levels
from ..hooks.hspace import HSpacePatch, HSpaceRecorder
from ..samplers.asyrp import estimate_intervals
from ..samplers.coords import x_to_vp
from .asyrp import set_hspace_patch, with_shared_encoder
from .checks import (checked_latent, h_channels, log_sigmas, model_family, require_latent_channels, require_unet,
                     t_to_sigma)
from .ddim import DDIMInversionSampler
from .fingerprint import META_KEY, compare, fingerprint, from_meta, to_meta
from .run import run_with_cfg_guider


def ddim_sigmas(model, steps: int) -> torch.Tensor:
    """The ``ddim_uniform`` SIGMAS of ``steps`` steps (the schedule the paper's DDIM uses)."""
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps).cpu()


def apply_direction(model, direction, strength: float, t_start: int, t_edit: int, mode: str, apply_to: str,
                    spatial: str, step_scaling: bool, who: str):
    """A clone of ``model`` that adds strength·Δh in [t_edit, t_start] (``hooks.hspace.HSpacePatch``, at
    ``middle_block_after_patch`` where the host has it: ``adapters.asyrp.set_hspace_patch``); asymmetric mode also
    gets the shared encoder."""
    unet = require_unet(model, who)
    if t_edit > t_start:
        raise ValueError(f"{who}: t_edit ({t_edit}) is above t_start ({t_start}); the window is t_start ≥ t ≥ "
                         f"t_edit.")
    family = model_family(model.model)
    if direction.channels != h_channels(unet):
        raise ValueError(f"{who}: the direction has {direction.channels} channels but {family}'s h-space has "
                         f"{h_channels(unet)}; it was made for {direction.meta.get('family', 'another model')}.")
    if direction.meta.get("family") and direction.meta["family"] != family:
        raise ValueError(f"{who}: the direction was made with a {direction.meta['family']} model, this is "
                         f"{family}; h-space directions are specific to a model family.")
    compare(from_meta(direction.meta.get(META_KEY)), model, who, "the direction",
            "the h-space node that made it", exact=False)
    table = None if isinstance(direction, Direction) else log_sigmas(model, who)
    try:
        patch = HSpacePatch(direction, strength, t_to_sigma(model, t_start), t_to_sigma(model, t_edit), mode,
                            apply_to, spatial, table, step_scaling)
    except HSpaceError as e:
        raise ValueError(f"{who}: {e}") from None
    m = set_hspace_patch(model.clone(), patch)
    return with_shared_encoder(m) if mode == "asymmetric" else m


def direction_from_prompts(model, source, target, latent: dict, steps: int, seed: int, reduce: str,
                           who: str) -> Direction:
    """Δh_t = mean h(x_t, target) − mean h(x_t, source) along stock DDIM trajectories of the source prompt: cfg 1
    with ``disable_cfg1_optimization``, source as positive and target as negative, so one batched call per step
    records h for both while the trajectory follows the source."""
    require_unet(model, who)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    require_latent_channels(samples, model, who)
    m = model.clone()
    rec = HSpaceRecorder()
    m.set_model_output_block_patch(rec)
    m.model_options["disable_cfg1_optimization"] = True  # also run the "negative" (= target) at cfg 1
    guider = comfy.samplers.CFGGuider(m)
    guider.set_conds(source, target)  # chunk 0 = source (cond), 1 = target (uncond); cfg 1 follows the source
    guider.set_cfg(1.0)
    noise = comfy.sample.prepare_noise(samples, seed)
    guider.sample(noise, samples, comfy.samplers.sampler_object("euler"), ddim_sigmas(model, steps),
                  disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    delta, levels = reduce_levels(*rec.difference(), reduce)
    meta = {"kind": f"prompts_{reduce}", "family": model_family(model.model), "steps": str(steps),
            "samples": str(samples.shape[0]), "name": "prompts", META_KEY: to_meta(fingerprint(model))}
    return Direction(delta, levels, meta)


def direction_from_images(model, set_a: dict, set_b: dict, neutral, steps: int, reduce: str, who: str) -> Direction:
    """Δh_t = mean h_t over set B − mean h_t over set A: each set DDIM-inverted (cfg 1, the neutral prompt), then
    replayed with the stock euler while the same recording patch collects h."""
    require_unet(model, who)
    a, b = (checked_latent(model, s, who) for s in (set_a, set_b))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{who}: the sets differ in resolution ({tuple(a.shape[2:])} vs {tuple(b.shape[2:])}); "
                         f"encode both at one size.")
    sigmas = ddim_sigmas(model, steps)
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
            "samples": f"{a.shape[0]}+{b.shape[0]}", "name": "images", META_KEY: to_meta(fingerprint(model))}
    return Direction(delta, levels, meta)


def measure_intervals(model, vae, samples: torch.Tensor, neutral, steps: int, distance, edit_threshold: float,
                      boost_threshold: float, text_cosine: float) -> tuple[int, int, dict]:
    """(t_edit, t_boost, curves): along a DDIM inversion (cfg 1), the mean ``distance`` (LPIPS) between each image
    and its predicted x0 P_t and its noisy latent x_t at every t, read off by ``samplers.asyrp.estimate_intervals``."""
    ms = model.get_model_object("model_sampling")
    sigmas = ddim_sigmas(model, steps)
    levels = sigmas.flip(0)
    inner = model.model

    def image(z):  # a model-space latent -> [B, 3, H, W] in [0, 1]
        return vae.decode(inner.process_latent_out(z.float().cpu())).movedim(-1, 1).clamp(0, 1)

    clean = vae.decode(samples).movedim(-1, 1).clamp(0, 1)
    ts, dist_p, dist_x = [], [], []

    def on_step(i, denoised, x, total):
        sigma = levels[i + 1]
        ts.append(int(ms.timestep(sigma)))
        dist_p.append(float(distance(clean, image(denoised)).mean()))
        dist_x.append(float(distance(clean, image(x_to_vp(x, sigma))).mean()))

    run_with_cfg_guider(model, neutral, neutral, 1.0, DDIMInversionSampler(), samples, sigmas, on_step)
    t_edit, t_boost = estimate_intervals(ts, dist_p, dist_x, edit_threshold, boost_threshold, text_cosine)
    curves = {"source": "lpips", "t": ts, "lpips_x0_P_t": dist_p, "lpips_x0_x_t": dist_x,
              "edit_threshold": edit_threshold * text_cosine, "boost_threshold": boost_threshold}
    return t_edit, t_boost, curves
