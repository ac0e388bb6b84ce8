"""Seconds per CSDS iteration vs seconds per sampler step of the same edit — EMS Edit Sampler on the SD3 shapes world
(or ``--world unet``), the same latent, prompts, steps and cfg, interleaved in one process. One iteration is one
batched model call over [c~, c_attr] (csds_cfg 1), one sampler step one batched CFG call over [c~, c_negative], so
~1.0 is expected; target <= 2.1 (the spec: two or three model evaluations per iteration, batched).

per iteration = (time with K iterations − time with 0) / K;  per step = time with 0 iterations / its steps

Each round times both runs back to back (order reversed every other round) and gives one ratio; min / median / max
over the rounds, the target judged on the median. (10 steps a run, 8 of them run on SD3 at strength 0.75, since 7
rounds replaced 3 of 20: both sides are per unit.)

    python -m bench.bench_csds [--size 256] [--steps 10] [--cfg 7.5] [--rounds 7] [--world sd3|unet] [--json PATH]
"""
from __future__ import annotations

from .common import WORLDS, Report, host, interleaved, parser, per_round, shapes_world

TARGET = 2.1
ITERATIONS = 10


def main(argv=None) -> Report:
    ap = parser(__doc__, steps=10, cfg=7.5, worlds=True)
    ap.set_defaults(world="sd3")
    a = ap.parse_args(argv)
    rep = Report(f"csds ({a.world})", a)
    model, clip, _, _ = shapes_world(a.world)
    import torch
    C = host.node_class
    side = a.size // 8
    with torch.inference_mode():
        c_s, c_t, c_a, c_n = C("InvEditEMSEncodeEditPrompts").execute(clip, "a red circle", "a blue circle", "blue",
                                                                      "").args
        c = C("InvEditEMSTextManipulate").execute(c_s, c_t, 1.0, True, True, "all", "zero_pad").args[0]
        ch = model.model.latent_format.latent_channels
        latent = {"samples": torch.randn(1, ch, side, side, generator=torch.Generator().manual_seed(0))}

    def run(iterations):
        with torch.inference_mode():
            C("InvEditEMSEditSampler").execute(
                model=model, positive=c, negative=c_n, attribute=c_a, latent_image=latent, seed=0, steps=a.steps,
                strength=1.0 if a.world == "unet" else 0.75, strength_mode="diffusers", cfg=a.cfg,
                sampler_name="euler", scheduler="simple", iterations=iterations, lr_start=0.1, lr_end=0.01,
                lr_schedule="geometric", lambda_=0.5, csds_cfg=1.0, direction="toward_attribute", grad_mode="delta",
                step_space="auto")

    steps_run = a.steps - int(a.steps - (1.0 if a.world == "unet" else 0.75) * a.steps)
    whole = interleaved({"0": lambda: run(0), "k": lambda: run(ITERATIONS)}, a.rounds)  # seconds per run
    per_step = [t0 / steps_run for t0 in whole["0"]]
    per_it = [(tk - t0) / ITERATIONS for t0, tk in zip(whole["0"], whole["k"])]
    rep.time_table(f"CSDS iteration vs sampler step — {WORLDS[a.world][1]}, {a.size}x{a.size} px, cfg {a.cfg}, "
                   f"{steps_run} steps, {ITERATIONS} iterations, {a.rounds} interleaved rounds, "
                   f"{torch.get_num_threads()} threads",
                   {"sampler step (euler, CFG)": per_step, "CSDS iteration (delta)": per_it})
    rep.ratio("CSDS iteration / sampler step", per_round(per_it, per_step), TARGET)
    return rep.finish(f"CSDS iteration / sampler step — {WORLDS[a.world][1]}")


if __name__ == "__main__":
    main()
