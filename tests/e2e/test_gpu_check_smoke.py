"""make gpu-check's script on the CPU host (--cpu): the KSampler → gradient node → KSampler sequence through a real
server, the control and the leak check, and the report (the GPU paths themselves need a CUDA machine)."""
import json
import os
import subprocess
import sys

import pytest

from harness.paths import HOST_NAME, ROOT


@pytest.mark.slow
def test_the_gpu_check_script_runs_a_gradient_node_between_two_identical_ksamplers(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--cpu", "--only", "one_step_guidance",
                           "--flags", "default flags", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, COMFY_HOST=HOST_NAME), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu-check.json").read_text())
    assert res[0]["control"] == {"v1-5-pruned-emaonly-fp16.safetensors": 0}
    row = res[0]["checks"]["one_step_guidance"]
    assert row["status"] == "ok" and row["ksampler_after_max_abs_diff"] == 0, row
    assert "| one_step_guidance | One-Step Guidance Sampler | ok |" in (out / "gpu-check.md").read_text()
