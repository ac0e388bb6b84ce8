"""The live loss chart (web/js/loss_chart.js + adapters/progress.py) in the real frontend: a DOODL workflow queued
through the frontend; the chart on the optimiser node receives every iteration's loss while the node runs, draws
them, keeps the final curve after the run, and adds nothing to the saved workflow. A screenshot goes to the test's
output folder."""
import json
import time

from harness.examples import CKPT

ITERATIONS = 4

_JS_STATE = """(id) => {
  const n = window.app.graph.getNodeById(id);
  const s = n?.invEditLoss;
  return s ? {live: s.live, values: s.values, steps: s.steps, drawn: s.drawn, maxDrawnLive: s.maxDrawnLive,
              final: s.final, expected: s.expected, size: n.size} : null;
}"""

_JS_SERIALIZED = """(id) => JSON.stringify(window.app.graph.serialize().nodes.find((n) => String(n.id) === String(id)))"""


def doodl_prompt():
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a circle"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "InvEditDOODLClassifierLoss", "inputs": {
            "classifier": "shapes_colour.safetensors", "architecture": "small_cnn", "target": "blue",
            "num_classes": 0, "normalisation": "none", "mode": "cross_entropy", "weight": 1.0, "crops": 4,
            "crop_power": 0.3, "input_size": 64}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "InvEditDOODLOptimize", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "loss": ["4", 0],
            "latent": ["5", 0], "seed": 1, "steps": 6, "cfg": 3.0, "mix_p": 0.93, "iterations": ITERATIONS,
            "lr": 300.0, "grad_clip": 0.02, "momentum": 0.9, "perturb_std": 1e-4, "keep": "last",
            "backprop": "reversible", "pair_steps": "shared"}},
        "7": {"class_type": "InvEditLossChart", "inputs": {"loss_history": ["6", 2], "width": 256, "height": 128,
                                                          "log_scale": False}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    return p


def test_the_chart_receives_and_draws_every_iteration_live_and_is_not_saved(server, frontend, tmp_path):
    wf = frontend.api_to_workflow(doodl_prompt())
    node = next(n["id"] for n in wf["nodes"] if n["type"] == "InvEditDOODLOptimize")
    prompt_id = frontend.queue_workflow(wf)
    before = json.loads(frontend.page.evaluate(_JS_SERIALIZED, node))
    seen_live = None
    deadline = time.time() + 300
    while time.time() < deadline:  # watch the node while the prompt runs
        state = frontend.page.evaluate(_JS_STATE, node)
        if state and not state["final"] and state["live"] >= 2 and seen_live is None:
            seen_live = state
            frontend.page.screenshot(path=str(tmp_path / "loss_chart_live.png"))
        if server.get(f"/history/{prompt_id}").get(prompt_id):
            break
        time.sleep(0.1)
    entry = server.wait(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]
    final = entry["outputs"][str(node)]["invedit_loss"][0]["values"]
    assert len(final) == ITERATIONS + 1
    for _ in range(50):  # the executed message and a redraw reach the page right after the history
        state = frontend.page.evaluate(_JS_STATE, node)
        if state["final"] and state["drawn"] == len(final):
            break
        time.sleep(0.1)
    frontend.page.screenshot(path=str(tmp_path / "loss_chart.png"))
    # every iteration's value arrived as a live message, in order, equal to the final history
    assert state["live"] == ITERATIONS + 1 and state["expected"] == ITERATIONS + 1
    assert state["values"] == final and state["steps"] == list(range(ITERATIONS + 1))
    assert seen_live is not None and seen_live["maxDrawnLive"] >= 1, seen_live  # drawn while running
    assert state["final"] and state["drawn"] == len(final)  # the final curve stays drawn
    after = json.loads(frontend.page.evaluate(_JS_SERIALIZED, node))
    assert sorted(after) == sorted(before)  # no new keys in the saved node
    assert after.get("properties") == before.get("properties")
    assert after.get("widgets_values") == before.get("widgets_values")
    assert "invEditLoss" not in json.dumps(after)
    chart = entry["outputs"]["8"]["images"]
    assert chart and server.view(chart[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "loss_chart.png").stat().st_size > 0
    assert frontend.unexpected_errors() == []
