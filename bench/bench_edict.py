"""Seconds per EDICT step vs seconds per DDIM step — same model, latent size, sigmas and cfg, interleaved in one
process — for sampling (EDICT SAMPLER vs the stock ddim sampler, both through comfy.sample.sample_custom) and for
inversion (EDICT Invert vs DDIM Invert). EDICT evaluates the model twice per step, so 2.0 is the floor; target
<= 2.05. Also prints the reconstruction error of both inversions on the same latent.

    python -m bench.bench_edict [--size 256] [--steps 20] [--cfg 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.tiny_models import FILES  # noqa: E402

TARGET = 2.05


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)

    host.boot()
    import torch
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    C = host.node_class
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    with torch.inference_mode():
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        pos = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        g = torch.Generator().manual_seed(0)
        side = a.size // 8
        latent = {"samples": torch.randn(1, 4, side, side, generator=g) * 4}
        noise = torch.randn(1, 4, side, side, generator=g)
        empty = torch.zeros_like(noise)
        sigmas = C("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0]
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

        runs = {"EDICT sampler": sample(edict_sampler), "DDIM sampler (stock ddim)": sample(ddim_sampler),
                "EDICT Invert": edict_invert, "DDIM Invert": ddim_invert}
        for fn in runs.values():  # warm-up
            fn()
        times: dict = {k: [] for k in runs}
        for _ in range(a.rounds):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / a.steps)

        edict_rec = C("InvEditEDICTRegenerate").execute(model=model, positive=pos, negative=neg, pair=out["pair"],
                                                        cfg=a.cfg, **opts)[0]["samples"]
        ddim_rec = comfy.sample.sample_custom(model, empty, a.cfg, ddim_sampler, sigmas, pos, neg,
                                              out["ddim"]["samples"], disable_pbar=True, seed=0)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_s = med["EDICT sampler"] / med["DDIM sampler (stock ddim)"]
    ratio_i = med["EDICT Invert"] / med["DDIM Invert"]
    print(f"\nEDICT step vs DDIM step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg {a.cfg}, {a.steps} steps "
          f"(normal), median of {a.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print(f"| {'what':<34} | {'s/step':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|")
    for k, v in med.items():
        print(f"| {k:<34} | {v:8.4f} |")
    print(f"| {'ratio EDICT / DDIM, sampling':<34} | {ratio_s:8.3f} |")
    print(f"| {'ratio EDICT / DDIM, inversion':<34} | {ratio_i:8.3f} |")
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
