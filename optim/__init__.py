"""Gradient procedures and their losses: h-space direction training (``hspace``), DOODL (``doodl``), the losses and
the local CLIP (``losses``), user classifiers (``classifiers``); ``comfy_train`` runs them inside ComfyUI. CASO
training, CSDS and StyleDiffusion inversion will join them (see docs/architecture.md)."""
