"""Seconds per DDIM inversion step (InvEditDDIMInvert) vs a stock KSampler step (euler), same model, latent size,
steps and cfg, measured interleaved in one process: each round times both back to back (order reversed every other
round) and gives one ratio; min / median / max over the rounds, target median <= 1.05.

    python -m bench.bench_ddim [--size 256] [--steps 20] [--cfg 7] [--rounds 7] [--json PATH]
"""
from __future__ import annotations

from .common import Report, host, interleaved, parser, per_round, shapes_world

TARGET = 1.05


def main(argv=None) -> Report:
    a = parser(__doc__, steps=20, cfg=7.0).parse_args(argv)
    rep = Report("ddim", a)
    model, _, _, encode = shapes_world()
    import torch
    import nodes

    invert = host.node_class("InvEditDDIMInvert")
    with torch.inference_mode():
        pos, neg = encode("a red circle"), encode("")
        latent = {"samples": torch.randn(1, 4, a.size // 8, a.size // 8, generator=torch.Generator().manual_seed(0))}
        sigmas = host.node_class("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0]
        times = interleaved({
            "InvEditDDIMInvert": lambda: invert.execute(model=model, positive=pos, negative=neg, latent=latent,
                                                        sigmas=sigmas, cfg=a.cfg),
            "KSampler (euler)": lambda: nodes.KSampler().sample(model, 0, a.steps, a.cfg, "euler", "normal", pos, neg,
                                                                latent, denoise=1.0),
        }, a.rounds, a.steps)
    rep.time_table(f"DDIM inversion step vs stock KSampler step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg "
                   f"{a.cfg}, {a.steps} steps, {a.rounds} interleaved rounds, {torch.get_num_threads()} threads",
                   times, base="KSampler (euler)")
    rep.ratio("invert / KSampler", per_round(times["InvEditDDIMInvert"], times["KSampler (euler)"]), TARGET)
    return rep.finish("DDIM inversion step / stock KSampler step")


if __name__ == "__main__":
    main()
