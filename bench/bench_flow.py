"""Sampling time per image of the SD3 shapes world (a flow-matching MMDiT, depth 4) vs the U-Net shapes world (the
SD1.5-detectable U-Net): the stock euler sampler through comfy.sample.sample_custom, the same image size, steps, cfg and
batch, interleaved in one process (each round times both back to back, order reversed every other round, and gives
one ratio; min / median / max over the rounds). A ratio, not a target: it says what a flow-model row of the
scorecard costs beside its U-Net row.

    python -m bench.bench_flow [--size 64] [--steps 20] [--cfg 3] [--rounds 7] [--json PATH]
"""
from __future__ import annotations

from .common import WORLDS, Report, host, interleaved, parser, per_round

BATCH = 4


def main(argv=None) -> Report:
    a = parser(__doc__, steps=20, cfg=3.0, size=64).parse_args(argv)
    rep = Report("flow", a)
    host.boot()
    import torch
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import nodes
    comfy.utils.PROGRESS_BAR_ENABLED = False
    runs = {}
    with torch.inference_mode():
        for world, (ckpt, title) in WORLDS.items():
            model, clip = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[:2]
            pos, neg = (nodes.CLIPTextEncode().encode(clip, t)[0] for t in ("a red circle", ""))
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", a.steps)
            latent = torch.zeros(BATCH, model.model.latent_format.latent_channels, a.size // 8, a.size // 8)
            noise = comfy.sample.prepare_noise(latent, 0)

            def run(model=model, pos=pos, neg=neg, sigmas=sigmas, latent=latent, noise=noise):
                with torch.inference_mode():
                    comfy.sample.sample_custom(model, noise, a.cfg, comfy.samplers.sampler_object("euler"), sigmas,
                                               pos, neg, latent, disable_pbar=True, seed=0)
            runs[title] = run
    times = interleaved(runs, a.rounds, BATCH)  # seconds per image
    unet, dit = (WORLDS[k][1] for k in ("unet", "sd3"))
    rep.time_table(f"Sampling time per image — euler, simple, {a.steps} steps, cfg {a.cfg}, {a.size}x{a.size} px, "
                   f"batch {BATCH}, {a.rounds} interleaved rounds, {torch.get_num_threads()} threads", times,
                   unit="s/image", base=unet)
    rep.ratio("SD3 world / U-Net world, per image", per_round(times[dit], times[unet]), note="no target")
    return rep.finish("SD3 world / U-Net world")


if __name__ == "__main__":
    main()
