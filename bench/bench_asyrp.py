"""Seconds per Asyrp edit step (shared encoder: encoder + middle block once, decoder twice) and per naive edit step
(two full U-Net passes), each divided by a plain step (stock euler), same model, size, sigmas and cfg, interleaved in
one process. Every step is in the edit window. Targets: shared <= 1.6; naive is about 2.

    python -m bench.bench_asyrp [--size 256] [--steps 10] [--cfg 3] [--rounds 3]
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

TARGET = 1.6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=10)
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
    with torch.inference_mode():
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        red = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        blue = nodes.CLIPTextEncode().encode(clip, "a blue circle")[0]
        empty = nodes.CLIPTextEncode().encode(clip, "")[0]
        side = a.size // 8
        direction = C("InvEditHSpaceFromPrompts").execute(model, red, blue, {"samples": torch.zeros(1, 4, side, side)},
                                                          4, 0, "global")[0]
        edited = C("InvEditHSpaceApply").execute(model, direction, 3.0, 999, 0, "asymmetric", "both", "resize")[0]
        latent = torch.zeros(1, 4, side, side)
        noise = comfy.sample.prepare_noise(latent, 0)
        sigmas = C("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0]
        shared = C("InvEditSamplerAsyrp").execute(0, 1.0)[0]
        naive = type(shared)(0, 1.0, shared_encoder=False)

        def run(m, sampler):
            return lambda: comfy.sample.sample_custom(m, noise, a.cfg, sampler, sigmas, red, empty, latent,
                                                      disable_pbar=True, seed=0)

        runs = {"plain step (stock euler)": run(model, comfy.samplers.sampler_object("euler")),
                "Asyrp step, shared encoder": run(edited, shared),
                "Asyrp step, two full passes": run(edited, naive)}
        for fn in runs.values():
            fn()
        times: dict = {k: [] for k in runs}
        for _ in range(a.rounds):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    plain = med["plain step (stock euler)"]
    print(f"\nAsyrp edit step vs plain step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg {a.cfg}, {a.steps} "
          f"steps all in the edit window, median of {a.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print(f"| {'what':<34} | {'s/step':>8} | {'/ plain':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|")
    for k, v in med.items():
        print(f"| {k:<34} | {v:8.4f} | {v / plain:8.3f} |")
    ratio = med["Asyrp step, shared encoder"] / plain
    print(f"target <= {TARGET} for the shared-encoder step: {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
