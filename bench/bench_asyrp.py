"""Seconds per Asyrp edit step (shared encoder: encoder + middle block once, decoder twice) and per naive edit step
(two full U-Net passes), each divided by a plain step (stock euler), same model, size, sigmas and cfg, interleaved in
one process: each round times the three back to back (order reversed every other round) and gives one value of each
ratio; min / median / max over the rounds. Every step is in the edit window. Targets: shared median <= 1.5 (encoder
and middle block once, the decoder twice: 1.5 when the two halves cost the same); naive is about 2.

The same rounds also time the U-Net's two halves alone (``hooks.unet_split.encode`` / ``decode``, the batch of a
cfg step) and print the floor of a shared-encoder step on this model, (E + 2D) / (E + D): what the ratio would be
with no cost but the network's, so that a reading near 1.5 can be told apart from overhead.

    python -m bench.bench_asyrp [--size 256] [--steps 10] [--cfg 3] [--rounds 7] [--json PATH]
"""
from __future__ import annotations

from .common import Report, host, interleaved, parser, per_round, shapes_world

TARGET = 1.5
ENC = "U-Net encoder + middle block (E)"
DEC = "U-Net decoder (D)"


def main(argv=None) -> Report:
    a = parser(__doc__, steps=10, cfg=3.0).parse_args(argv)
    rep = Report("asyrp", a)
    model, _, _, encode = shapes_world()
    import torch
    import comfy.sample
    import comfy.samplers

    C = host.node_class
    with torch.inference_mode():
        red, blue, empty = encode("a red circle"), encode("a blue circle"), encode("")
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

        split, unet = host.pack_module("hooks.unet_split"), model.model.diffusion_model
        xb, ts = torch.randn(2, 4, side, side), torch.full((2,), 500.0)
        ctx = torch.cat([red[0][0], empty[0][0]])
        state = split.encode(unet, xb, ts, ctx, None, None, {})

        def half(fn):
            def go():
                for _ in range(a.steps):
                    fn()
            return go

        times = interleaved({"plain step (stock euler)": run(model, comfy.samplers.sampler_object("euler")),
                             "Asyrp step, shared encoder": run(edited, shared),
                             "Asyrp step, two full passes": run(edited, naive),
                             ENC: half(lambda: split.encode(unet, xb, ts, ctx, None, None, {})),
                             DEC: half(lambda: split.decode(unet, state, ctx, None, {}))}, a.rounds, a.steps)
    plain = times["plain step (stock euler)"]
    rep.time_table(f"Asyrp edit step vs plain step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg {a.cfg}, "
                   f"{a.steps} steps all in the edit window, {a.rounds} interleaved rounds, "
                   f"{torch.get_num_threads()} threads", times, base="plain step (stock euler)")
    rep.ratio("Asyrp step, shared encoder / plain step", per_round(times["Asyrp step, shared encoder"], plain), TARGET)
    rep.ratio("Asyrp step, two full passes / plain step", per_round(times["Asyrp step, two full passes"], plain),
              note="no target: about 2")
    rep.ratio("floor (E + 2D) / (E + D) of this U-Net", [(e + 2 * d) / (e + d) for e, d in zip(times[ENC], times[DEC])],
              note="no target: the shared-encoder ratio with no cost but the network's halves")
    return rep.finish("Asyrp edit step / plain step")


if __name__ == "__main__":
    main()
