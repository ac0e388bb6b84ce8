"""Seconds per BDIA step vs seconds per DDIM step — same model, latent size, sigmas and cfg, interleaved in one
process — for sampling (BDIA SAMPLER vs the stock ddim sampler, both through comfy.sample.sample_custom) and for
inversion (BDIA Invert vs DDIM Invert), with EDICT's sampler beside them (two evaluations a step). BDIA evaluates
the model once a step, as DDIM does; target <= 1.05. Also prints the reconstruction error of the three inversions on
the same latent and their model evaluations. ``--world sd3``: the same on the SD3 shapes world (a flow-matching
MMDiT). Each round times the runs back to back (order reversed every other round) and gives one value of each ratio:
min / median / max over the rounds, the target judged on the median.

    python -m bench.bench_bdia [--size 256] [--steps 10] [--cfg 3] [--rounds 7] [--world unet|sd3] [--json PATH]
"""
from __future__ import annotations

from .common import WORLDS, Report, host, interleaved, parser, per_round, shapes_world, step_inputs

TARGET = 1.05
GAMMA = 0.5  # the paper's: exact at these step counts (<= 20)


def main(argv=None) -> Report:
    a = parser(__doc__, steps=10, cfg=3.0, worlds=True).parse_args(argv)
    rep = Report(f"bdia ({a.world})", a)
    model, _, _, encode = shapes_world(a.world)
    import torch
    import comfy.sample
    import comfy.samplers

    C = host.node_class
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    sd3 = a.world == "sd3"
    with torch.inference_mode():
        inp = step_inputs(model, encode, a.size, a.steps, sd3)
        pos, neg, latent, noise, empty, sigmas = (inp[k] for k in ("pos", "neg", "latent", "noise", "empty",
                                                                   "sigmas"))
        bdia_sampler = C("InvEditSamplerBDIA").execute(gamma=GAMMA, state_dtype="float64")[0]
        edict_sampler = C("InvEditSamplerEDICT").execute(state_dtype="float64", output="x", **opts)[0]
        ddim_sampler = comfy.samplers.sampler_object("ddim")
        out: dict = {}

        def sample(sampler):
            return lambda: comfy.sample.sample_custom(model, noise, a.cfg, sampler, sigmas, pos, neg, empty,
                                                      disable_pbar=True, seed=0)

        def bdia_invert():
            out["bdia"] = C("InvEditBDIAInvert").execute(model=model, positive=pos, negative=neg, latent=latent,
                                                         sigmas=sigmas, cfg=a.cfg, gamma=GAMMA,
                                                         state_dtype="float64")[0]

        def ddim_invert():
            out["ddim"] = C("InvEditDDIMInvert").execute(model=model, positive=pos, negative=neg, latent=latent,
                                                         sigmas=sigmas, cfg=a.cfg)[0]

        times = interleaved({"BDIA sampler": sample(bdia_sampler), "DDIM sampler (stock ddim)": sample(ddim_sampler),
                             "EDICT sampler": sample(edict_sampler), "BDIA Invert": bdia_invert,
                             "DDIM Invert": ddim_invert}, a.rounds, a.steps)
        bdia_rec = C("InvEditBDIARegenerate").execute(model=model, positive=pos, negative=neg, pair=out["bdia"],
                                                      cfg=a.cfg, gamma=GAMMA)[0]["samples"]
        ddim_rec = comfy.sample.sample_custom(model, empty, a.cfg, ddim_sampler, sigmas, pos, neg,
                                              out["ddim"]["samples"], disable_pbar=True, seed=0)

    rep.time_table(f"BDIA step vs DDIM step — {WORLDS[a.world][1]}, {a.size}x{a.size} px, cfg {a.cfg}, {a.steps} "
                   f"steps ({'simple, below σ = 1' if sd3 else 'normal'}), gamma {GAMMA}, {a.rounds} interleaved "
                   f"rounds, {torch.get_num_threads()} threads", times)
    rep.ratio("BDIA / DDIM, sampling", per_round(times["BDIA sampler"], times["DDIM sampler (stock ddim)"]), TARGET,
              "1 model evaluation per step, as DDIM")
    rep.ratio("BDIA / DDIM, inversion", per_round(times["BDIA Invert"], times["DDIM Invert"]), TARGET)
    rep.ratio("EDICT / DDIM, sampling (beside)", per_round(times["EDICT sampler"], times["DDIM sampler (stock ddim)"]),
              None, "2 model evaluations per step")
    src = latent["samples"]
    print(f"\nReconstruction of the same latent (invert, then regenerate with the same prompt and cfg {a.cfg})")
    print(f"| {'method':<34} | {'latent MSE':>11} | {'max|err|':>9} |")
    print(f"|{'-' * 36}|{'-' * 13}|{'-' * 11}|")
    for name, rec in (("BDIA (float64 state)", bdia_rec), ("DDIM inversion + stock ddim", ddim_rec)):
        print(f"| {name:<34} | {float((rec - src).pow(2).mean()):11.3e} | {float((rec - src).abs().max()):9.2e} |")
    return rep.finish(f"BDIA step / DDIM step — {WORLDS[a.world][1]}")


if __name__ == "__main__":
    main()
