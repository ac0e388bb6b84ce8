"""Helpers of the host tests (tests/host): an interrupt that must stop what runs, the stock KSampler on a world."""
import contextlib

import pytest


@contextlib.contextmanager
def must_be_interrupted():
    """ComfyUI's interrupt flag set inside: what runs there must stop with InterruptProcessingException (else the
    test fails); the flag is cleared afterwards."""
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            yield
    finally:
        mm.interrupt_current_processing(False)


def stock_ksampler(w, steps: int):
    """The stock KSampler on the world's MODEL ("a circle", cfg 3, euler, seed 3, one 64² latent): its latent."""
    import torch
    import nodes
    with torch.inference_mode():
        lat = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
        return nodes.KSampler().sample(w["model"], 3, steps, 3.0, "euler", "normal", w["enc"]["a circle"],
                                       w["enc"][""], lat)[0]["samples"]
