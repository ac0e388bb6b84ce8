"""Seconds per DDIM inversion step (InvEditDDIMInvert) vs a stock KSampler step (euler), same model, latent size,
steps and cfg, measured interleaved in one process. Target: ratio <= 1.05.

    python -m bench.bench_ddim [--size 256] [--steps 20] [--cfg 7] [--rounds 5]
"""
from __future__ import annotations

from .common import host, interleaved, parser, print_times, shapes_world

TARGET = 1.05


def main(argv=None) -> None:
    a = parser(__doc__, steps=20, cfg=7.0, rounds=5).parse_args(argv)
    model, _, _, encode = shapes_world()
    import torch
    import nodes

    invert = host.node_class("InvEditDDIMInvert")
    with torch.inference_mode():
        pos, neg = encode("a red circle"), encode("")
        latent = {"samples": torch.randn(1, 4, a.size // 8, a.size // 8, generator=torch.Generator().manual_seed(0))}
        sigmas = host.node_class("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0]
        med = interleaved({
            "InvEditDDIMInvert": lambda: invert.execute(model=model, positive=pos, negative=neg, latent=latent,
                                                        sigmas=sigmas, cfg=a.cfg),
            "KSampler (euler)": lambda: nodes.KSampler().sample(model, 0, a.steps, a.cfg, "euler", "normal", pos, neg,
                                                                latent, denoise=1.0),
        }, a.rounds, a.steps)
    ratio = med["InvEditDDIMInvert"] / med["KSampler (euler)"]
    print_times(f"DDIM inversion step vs stock KSampler step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg "
                f"{a.cfg}, {a.steps} steps, median of {a.rounds} interleaved rounds, {torch.get_num_threads()} threads",
                {**med, "ratio invert / KSampler": ratio})
    print(f"target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
