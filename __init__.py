"""InvEdit: exact inversion, semantic latent editing and guided optimisation for ComfyUI.

Entry point only: ComfyUI imports this package from custom_nodes/ and calls ``comfy_entrypoint``."""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
