"""Sampling math over a denoiser callable D(x, σ) -> x0 in ComfyUI σ-space (pure torch, no ComfyUI import),
plus thin adapters (``comfy_sampler``) that wrap it as ComfyUI ``Sampler`` objects."""
