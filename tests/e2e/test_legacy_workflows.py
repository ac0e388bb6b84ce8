"""Workflows saved by version 0.1 (tests/fixtures/v0_1/: the DOODL socket was INVEDIT_DOODL_LOSS, DOODL's third
output a STRING, h-space Train Direction had one output) still load in the frontend and run to success."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.frontend  # run again on frontend 1.58.1 by make test

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "v0_1"


@pytest.mark.parametrize("name", ["doodl_edit", "hspace_train"])
def test_a_workflow_saved_by_version_0_1_runs(server, frontend, name):
    wf = json.loads((FIXTURES / f"{name}.json").read_text())
    for node in wf["nodes"]:  # the test is about 0.1's sockets and widgets: 2 of the saved 6 DOODL iterations do
        if node["type"] == "InvEditDOODLOptimize":
            assert node["widgets_values"][5] == 6, node["widgets_values"]  # iterations, as 0.1 saved it
            node["widgets_values"][5] = 2
    prompt_id = frontend.queue_workflow(wf)
    entry = server.wait(prompt_id, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert any(o.get("images") for o in entry["outputs"].values())
