"""DOODL memory and speed on the shapes world, one process:

1. memory of one DOODL iteration at T = 10 and T = 50 EDICT steps, for the reversible backward (the default), the
   checkpoint mode and naive autograd: the peak of the bytes autograd holds for backward (live saved tensors, counted
   through ``torch.autograd.graph.saved_tensors_hooks``), and on CUDA also ``torch.cuda.max_memory_allocated``.
   Target: reversible T=50 / T=10 <= 1.1 (naive grows about 5×);
2. seconds per DOODL iteration / seconds per EDICT generation with the same steps (target <= 4): per iteration =
   (time of N iterations − time of 1) / (N − 1), so the final evaluation and set-up cancel; N (``--iterations``) is 3
   on the U-Net world and 7 on the SD3 one, whose iteration (about 1 s) is too short for a difference of two runs
   of 1 and 3 to resolve 10 % (2.6 … 4.9 over 7 rounds). Each round times the three
   runs back to back (order reversed every other round) and gives one ratio: min / median / max over the rounds,
   the target judged on the median. ``--steps`` (5 since 7 rounds replaced 3 of 10 steps: both sides of the
   ratio grow with the steps alike) is the timing's; the memory comparison's T are ``STEP_COUNTS``.

``--world sd3``: the same through the flow EDICT chain of the SD3 shapes world (a flow-matching MMDiT).

    python -m bench.bench_doodl [--size 128] [--steps 5] [--cfg 3] [--rounds 7] [--world unet|sd3] [--iterations N]
                                [--json PATH]
"""
from __future__ import annotations

from .common import WORLDS, LiveBytes, Report, host, interleaved, parser, per_round, shapes_world

MEMORY_TARGET, TIME_TARGET = 1.1, 4.0
STEP_COUNTS = (10, 50)  # the memory comparison's T
ITERATIONS = {"unet": 3, "sd3": 7}  # the longer timed run's iterations, per world


def main(argv=None) -> Report:
    ap = parser(__doc__, steps=5, cfg=3.0, size=128, worlds=True)
    ap.add_argument("--iterations", type=int, default=None,
                    help="iterations of the longer timed run (default 3 on the U-Net world, 7 on the SD3 one)")
    a = ap.parse_args(argv)
    n = a.iterations = a.iterations or ITERATIONS[a.world]
    if n < 2:
        ap.error("--iterations must be at least 2 (the time per iteration is a difference of runs of N and 1)")
    rep = Report(f"doodl ({a.world})", a, memory_steps=list(STEP_COUNTS))
    model, _, vae, encode = shapes_world(a.world)
    import torch
    import comfy.sample
    import comfy.samplers

    C = host.node_class
    side = a.size // 8
    with torch.inference_mode():
        pos, neg = encode("a circle"), encode("")
        loss = C("InvEditDOODLClassifierLoss").execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="blue", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64).args[0]
    latent = {"samples": torch.zeros(1, model.model.latent_format.latent_channels, side, side)}

    def doodl(steps, iterations, mode="reversible"):
        with torch.inference_mode():
            return C("InvEditDOODLOptimize").execute(
                model=model, positive=pos, negative=neg, vae=vae, loss=loss, latent=latent, seed=0, steps=steps,
                cfg=a.cfg, mix_p=0.93, iterations=iterations, lr=1.0, grad_clip=1e-3, momentum=0.9, perturb_std=1e-4,
                keep="last", backprop=mode)

    rows = {}
    cuda = torch.cuda.is_available()
    for mode in ("reversible", "checkpoint", "naive"):
        for steps in STEP_COUNTS:
            counter = LiveBytes()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                doodl(steps, 1, mode)
            rows[mode, steps] = (counter.peak, torch.cuda.max_memory_allocated() if cuda else None)
    print(f"\nDOODL memory, one iteration — {WORLDS[a.world][1]}, {a.size}x{a.size} px, cfg {a.cfg}")
    lo, hi = STEP_COUNTS
    print(f"| {'backprop':<10} | {f'saved MiB T={lo}':>14} | {f'saved MiB T={hi}':>14} | {'ratio':>6} |"
          + (f" {f'CUDA peak MiB T={lo}':>18} | {f'T={hi}':>8} | {'ratio':>6} |" if cuda else ""))
    print(f"|{'-' * 12}|{'-' * 16}|{'-' * 16}|{'-' * 8}|" + (f"{'-' * 20}|{'-' * 10}|{'-' * 8}|" if cuda else ""))
    for mode in ("reversible", "checkpoint", "naive"):
        (s10, c10), (s50, c50) = rows[mode, lo], rows[mode, hi]
        line = f"| {mode:<10} | {s10 / 2**20:14.2f} | {s50 / 2**20:14.2f} | {s50 / s10:6.2f} |"
        if cuda:
            line += f" {c10 / 2**20:18.1f} | {c50 / 2**20:8.1f} | {c50 / c10:6.2f} |"
        print(line)
    r = rows["reversible", hi][1 if cuda else 0] / rows["reversible", lo][1 if cuda else 0]
    print(f"target <= {MEMORY_TARGET} for reversible T={hi} / T={lo} ({'CUDA peak' if cuda else 'saved bytes'}): "
          f"{'met' if r <= MEMORY_TARGET else 'NOT met'} (a count, the same every run)")

    with torch.inference_mode():
        sigmas = C("InvEditEDICTSigmas").execute(model, a.steps, "official_980_0", 1.0)[0]
        sampler = C("InvEditSamplerEDICT").execute(0.93, True, True, "float64", "x")[0]
        noise = comfy.sample.prepare_noise(latent["samples"], 0)

    def generation():
        with torch.inference_mode():
            comfy.sample.sample_custom(model, noise, a.cfg, sampler, sigmas, pos, neg, latent["samples"],
                                       disable_pbar=True, seed=0)

    generation(), doodl(a.steps, 1)  # warm-up (doodl(n) is the same code)
    longer = f"DOODL, {n} iterations"
    whole = interleaved({"EDICT generation": generation, "DOODL, 1 iteration": lambda: doodl(a.steps, 1),
                         longer: lambda: doodl(a.steps, n)}, a.rounds, warmup=False)  # s per run
    per_it = [(many - one) / (n - 1) for one, many in zip(whole["DOODL, 1 iteration"], whole[longer])]
    rep.time_table(f"DOODL iteration vs EDICT generation — {a.steps} steps, {a.size}x{a.size} px, per iteration "
                   f"(t({n}) − t(1)) / {n - 1}, {a.rounds} interleaved rounds, {torch.get_num_threads()} threads", {
                       "EDICT generation": whole["EDICT generation"], "DOODL iteration (reversible)": per_it},
                   unit="seconds", base="EDICT generation")
    rep.ratio("memory reversible T=%d / T=%d" % (hi, lo), [r], MEMORY_TARGET,
              f"{'CUDA peak' if cuda else 'saved bytes'}: a count, one value")
    rep.ratio("DOODL iteration / EDICT generation", per_round(per_it, whole["EDICT generation"]), TIME_TARGET)
    return rep.finish(f"DOODL — {WORLDS[a.world][1]}")


if __name__ == "__main__":
    main()
