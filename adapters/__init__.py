"""Adapters between the pack's pure math (samplers/, hooks/, losses/, optim/) and ComfyUI: the only package that
imports ComfyUI at module level. Shared pieces: ``checks`` (model family and requirements), ``latent`` (LATENT keys and
the inversion metadata), ``run`` (guider runs, pass marking, gradients through ComfyUI's models), ``progress`` (one step
record to ComfyUI's callback, interrupt and the live loss chart); then one module per capability: ``ddim``,
``edict``, ``asyrp`` (the sampler), ``hspace`` (directions from prompts/images, intervals), ``hspace_train``,
``doodl``, ``clip`` (CLIP encoders for the losses)."""
