"""FlowEdit: inversion-free text-based editing with flow models (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli,
2024; official ``FlowEditSD3`` / ``FlowEditFLUX`` in fallenshock/FlowEdit, FlowEdit_utils.py), in ComfyUI σ-space.

Instead of inverting the source image x_src, FlowEdit integrates an ODE that starts *at* the image and moves it by
the difference of the target and source velocities, each taken at noised copies that share the same noise:

    Z_edit ← x_src;  for the steps i with n_min < T − i ≤ n_max (T = the step count):
        for k = 1 … n_avg:  ε_k ~ N(0, I),  Z_src = (1 − σ_i)·x_src + σ_i·ε_k,  Z_tar = Z_edit + Z_src − x_src
        V_Δ = (1/n_avg)·Σ_k [ v_tar(Z_tar, σ_i) − v_src(Z_src, σ_i) ]
        Z_edit ← Z_edit + (σ_{i+1} − σ_i)·V_Δ
    the last n_min steps (T − i ≤ n_min): plain sampling with the target from X = Z_edit + Z_src − x_src (Z_src
    noised afresh at the first of them): X ← X + (σ_{i+1} − σ_i)·v_tar(X, σ_i);  the result is X (Z_edit if n_min = 0)

v_src / v_tar are the CFG velocities of the source and target prompts with their own scales (the official defaults:
SD3 50 steps, n_max 33, n_min 0, n_avg 1, CFG 3.5 / 13.5; Flux 28 steps, n_max 24, 1.5 / 5.5). Steps with T − i >
n_max are skipped: n_max sets how much structure may change (like SDEdit's strength). Model calls: 2·n_avg a step
in the ODE phase (cond and uncond batched), 1 in the n_min phase. The noise comes from ``noise(shape)`` (the
official code draws it with torch.randn_like each time; the pack from a seeded generator, so runs repeat). Pure torch.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .steps import Callback, Step

Velocity = Callable[[Tensor, Tensor], Tensor]


def check_window(steps: int, n_min: int, n_max: int, n_avg: int, who: str = "FlowEdit") -> None:
    if n_avg < 1:
        raise ValueError(f"{who}: n_avg must be >= 1, got {n_avg}.")
    if not 0 <= n_min <= n_max:
        raise ValueError(f"{who}: need 0 <= n_min <= n_max, got n_min {n_min}, n_max {n_max}.")
    if min(n_max, steps) <= 0:
        raise ValueError(f"{who}: n_max {n_max} leaves no step of {steps} to edit; raise n_max (the official SD3 "
                         f"setting is 33 of 50 steps).")


def flowedit(v_src: Velocity, v_tar: Velocity, x_src: Tensor, sigmas: Tensor, n_min: int, n_max: int,
             n_avg: int, noise: Callable[[], Tensor], callback: Optional[Callback] = None) -> Tensor:
    """The edited latent (see the module docstring); ``sigmas`` descending to 0 as a scheduler gives them."""
    steps = sigmas.numel() - 1
    check_window(steps, n_min, n_max, n_avg)
    z_edit = x_src.clone()
    x_tar = None
    for i in range(steps):
        if steps - i > n_max:
            continue
        s, s_next = sigmas[i], sigmas[i + 1]
        if steps - i > n_min:
            v_delta = None
            for _ in range(n_avg):
                z_src = (1 - s) * x_src + s * noise()
                z_tar = z_edit + z_src - x_src
                d = (v_tar(z_tar, s) - v_src(z_src, s)) / n_avg
                v_delta = d if v_delta is None else v_delta + d
            z_edit = z_edit + (s_next - s) * v_delta
            state = z_edit
        else:
            if x_tar is None:
                x_tar = z_edit + (1 - s) * x_src + s * noise() - x_src
            x_tar = x_tar + (s_next - s) * v_tar(x_tar, s)
            state = x_tar
        if callback is not None:
            callback(Step(i, steps, state, None, s, s_next))
    return z_edit if x_tar is None else x_tar
