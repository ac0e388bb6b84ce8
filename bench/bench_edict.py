"""Seconds per EDICT step vs seconds per DDIM step — same model, latent size, sigmas and cfg, interleaved in one
process — for sampling (EDICT SAMPLER vs the stock ddim sampler, both through comfy.sample.sample_custom) and for
inversion (EDICT Invert vs DDIM Invert). EDICT evaluates the model twice per step, so 2.0 is the floor; target
<= 2.05. Also prints the reconstruction error of both inversions on the same latent. ``--world sd3``: the same on the
SD3 shapes world (a flow-matching MMDiT), where the stock ddim sampler is the flow Euler step.

    python -m bench.bench_edict [--size 256] [--steps 20] [--cfg 3] [--rounds 3] [--world unet|sd3]
"""
from __future__ import annotations

from .common import WORLDS, host, interleaved, parser, print_times, shapes_world

TARGET = 2.05


def main(argv=None) -> None:
    a = parser(__doc__, steps=20, cfg=3.0, worlds=True).parse_args(argv)
    model, _, _, encode = shapes_world(a.world)
    import torch
    import comfy.sample
    import comfy.samplers

    C = host.node_class
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    with torch.inference_mode():
        pos, neg = encode("a red circle"), encode("")
        g = torch.Generator().manual_seed(0)
        side, ch = a.size // 8, model.model.latent_format.latent_channels
        latent = {"samples": torch.randn(1, ch, side, side, generator=g) * (1 if a.world == "sd3" else 4)}
        noise = torch.randn(1, ch, side, side, generator=g)
        empty = torch.zeros_like(noise)
        # a flow model's DDIM inversion stops below σ = 1 (its hand-over to a stock sampler divides by 1 − σ): the
        # simple schedule of steps + 1 without its first level
        sd3 = a.world == "sd3"
        sigmas = (C("BasicScheduler").execute(model, "simple", a.steps + 1, 1.0)[0][1:] if sd3 else
                  C("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0])
        edict_sampler = C("InvEditSamplerEDICT").execute(state_dtype="float64", output="x", **opts)[0]
        ddim_sampler = comfy.samplers.sampler_object("ddim")
        out: dict = {}

        def sample(sampler):
            return lambda: comfy.sample.sample_custom(model, noise, a.cfg, sampler, sigmas, pos, neg, empty,
                                                      disable_pbar=True, seed=0)

        def edict_invert():
            out["pair"] = C("InvEditEDICTInvert").execute(model=model, positive=pos, negative=neg, latent=latent,
                                                          sigmas=sigmas, cfg=a.cfg, state_dtype="float64", **opts)[0]

        def ddim_invert():
            out["ddim"] = C("InvEditDDIMInvert").execute(model=model, positive=pos, negative=neg, latent=latent,
                                                         sigmas=sigmas, cfg=a.cfg)[0]

        med = interleaved({"EDICT sampler": sample(edict_sampler), "DDIM sampler (stock ddim)": sample(ddim_sampler),
                           "EDICT Invert": edict_invert, "DDIM Invert": ddim_invert}, a.rounds, a.steps)
        edict_rec = C("InvEditEDICTRegenerate").execute(model=model, positive=pos, negative=neg, pair=out["pair"],
                                                        cfg=a.cfg, **opts)[0]["samples"]
        ddim_rec = comfy.sample.sample_custom(model, empty, a.cfg, ddim_sampler, sigmas, pos, neg,
                                              out["ddim"]["samples"], disable_pbar=True, seed=0)

    ratio_s = med["EDICT sampler"] / med["DDIM sampler (stock ddim)"]
    ratio_i = med["EDICT Invert"] / med["DDIM Invert"]
    print_times(f"EDICT step vs DDIM step — {WORLDS[a.world][1]}, {a.size}x{a.size} px, cfg {a.cfg}, {a.steps} "
                f"steps ({'simple, below σ = 1' if sd3 else 'normal'}), median of {a.rounds} interleaved rounds, "
                f"{torch.get_num_threads()} threads",
                {**med, "ratio EDICT / DDIM, sampling": ratio_s, "ratio EDICT / DDIM, inversion": ratio_i})
    print(f"target <= {TARGET} (2 model evaluations per step is the floor): "
          f"{'met' if max(ratio_s, ratio_i) <= TARGET else 'NOT met'}")
    src = latent["samples"]
    print(f"\nReconstruction of the same latent (invert, then regenerate with the same prompt and cfg {a.cfg})")
    print(f"| {'method':<34} | {'latent MSE':>11} | {'max|err|':>9} |")
    print(f"|{'-' * 36}|{'-' * 13}|{'-' * 11}|")
    for name, rec in (("EDICT (float64 state)", edict_rec), ("DDIM inversion + stock ddim", ddim_rec)):
        print(f"| {name:<34} | {float((rec - src).pow(2).mean()):11.3e} | {float((rec - src).abs().max()):9.2e} |")


if __name__ == "__main__":
    main()
