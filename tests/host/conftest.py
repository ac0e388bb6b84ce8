"""The real ComfyUI 0.3.75 in this process (harness/host.py), with one test-only node that hands tensors back."""
import pytest

from harness import host
from harness.inputs import EXAMPLE_IMAGES

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
    return host


@pytest.fixture
def captured():
    CAPTURED.clear()
    return CAPTURED


@pytest.fixture
def example_image_name():
    return next(iter(EXAMPLE_IMAGES))
