"""The real ComfyUI of the test host in this process (harness/host.py: 0.3.75, or 0.33 with COMFY_HOST=0.33), with
one test-only node that hands tensors back."""
import pytest

from harness import host
from harness.inputs import EXAMPLE_IMAGES
from host_helpers import must_be_interrupted

CAPTURED: dict = {}


class CaptureForTest:
    """Test-only output node: stores any input under its key so a test can read the tensor the graph produced."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "key": ("STRING", {"default": "x"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "_test"

    def run(self, value, key):
        CAPTURED[key] = value
        return {}


@pytest.fixture(scope="session")
def comfy():
    host.boot()
    import nodes
    nodes.NODE_CLASS_MAPPINGS["CaptureForTest"] = CaptureForTest
    yield host
    host.release()


@pytest.fixture
def captured():
    """The values CaptureForTest stored during the test; cleared before and after (a captured MODEL kept to
    interpreter exit would be deleted after ComfyUI's modules are torn down, and its __del__ would fail there)."""
    CAPTURED.clear()
    yield CAPTURED
    CAPTURED.clear()


@pytest.fixture
def example_image_name():
    return next(iter(EXAMPLE_IMAGES))


@pytest.fixture
def assert_interrupts(comfy):
    """assert_interrupts(node_id, **inputs): with ComfyUI's interrupt flag set, the pack's inverter node (called on
    the shapes-world checkpoint, a prompt "x" and a random 8×8 latent over three sigmas) must stop with
    InterruptProcessingException; the flag is cleared afterwards."""
    import torch

    def check(node_id, **inputs):
        import comfy.model_management as mm
        import nodes
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint("v1-5-pruned-emaonly-fp16.safetensors")
        cond = nodes.CLIPTextEncode().encode(clip, "x")[0]
        with torch.inference_mode(), must_be_interrupted():
            nodes.NODE_CLASS_MAPPINGS[node_id].execute(
                model=model, positive=cond, negative=cond, latent={"samples": torch.randn(1, 4, 8, 8)},
                sigmas=torch.tensor([14.6, 1.0, 0.0]), **inputs)
    return check


@pytest.fixture(scope="session")
def load_world(comfy):
    """load_world(*prompts, ckpt=…) -> {"model", "vae", "te", "enc", "C"}: the shapes-world SD1.5 checkpoint (or
    ``ckpt``: "sd3.5_medium.safetensors" is the SD3 world) through the stock CheckpointLoaderSimple (a fresh load each
    call, so modules do not share model objects), the prompts encoded with CLIPTextEncode, ComfyUI's node classes;
    progress bars off."""
    import torch

    def load(*prompts, ckpt="v1-5-pruned-emaonly-fp16.safetensors"):
        import nodes
        import comfy.utils
        comfy.utils.PROGRESS_BAR_ENABLED = False
        with torch.inference_mode():
            model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)
            enc = {t: nodes.CLIPTextEncode().encode(te, t)[0] for t in prompts}
        return {"model": model, "vae": vae, "te": te, "enc": enc, "C": nodes.NODE_CLASS_MAPPINGS}
    return load


@pytest.fixture(scope="module")
def hspace_world(load_world):
    """The shapes world with the prompts "a red circle", "a blue circle" and "", and ``dir``: the red → blue h-space
    direction from those prompts (10 steps, two 64² latents, per timestep)."""
    import torch
    import nodes
    w = load_world("a red circle", "a blue circle", "")
    with torch.inference_mode():
        w["dir"] = w["C"]["InvEditHSpaceFromPrompts"].execute(
            w["model"], w["enc"]["a red circle"], w["enc"]["a blue circle"],
            nodes.EmptyLatentImage().generate(64, 64, 2)[0], 10, 0, "per_timestep")[0]
    return w
