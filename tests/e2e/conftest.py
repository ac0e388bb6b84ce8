"""A real ComfyUI server (127.0.0.1, the pack in custom_nodes/) and a headless-Chromium frontend on it, per module:
Playwright's sync API keeps an event loop running while the browser lives, so none may outlive the e2e modules (the
in-process host tests that follow call asyncio.run)."""
import pytest

from harness import pack_node_ids
from harness.frontend import Frontend
from harness.server import ComfyServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("comfy-output")
    with ComfyServer(output_dir=out) as srv:
        srv.output_path = out
        yield srv


@pytest.fixture(scope="module")
def frontend(server):
    with Frontend(server.url, require_nodes=("KSampler", *pack_node_ids())) as fe:
        yield fe
