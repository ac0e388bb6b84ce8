"""One real ComfyUI server (127.0.0.1, the pack in custom_nodes/) and one headless-Chromium frontend on it, shared by
the end-to-end modules."""
import pytest

from harness import pack_node_ids
from harness.frontend import Frontend
from harness.server import ComfyServer


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("comfy-output")
    with ComfyServer(output_dir=out) as srv:
        srv.output_path = out
        yield srv


@pytest.fixture(scope="session")
def frontend(server):
    with Frontend(server.url, require_nodes=("KSampler", *pack_node_ids())) as fe:
        yield fe
