"""The live loss chart (web/js/loss_chart.js + adapters/progress.py) and the Reconstruction Report text
(web/js/report.js) in the real frontend, in both renderers: the classic LiteGraph canvas and "Nodes 2.0"
(`Comfy.VueNodes.Enabled`, where LGraphCanvas.drawNode skips all node drawing).

A DOODL workflow queued through the frontend: the chart on the optimiser node receives every iteration's loss while
the node runs, draws them (blue pixels in the widget's canvas, and on the screen where that canvas is), keeps the final
curve after the run, and adds nothing to the saved workflow or the prompt. The same with the optimiser inside a
subgraph (loss events carry execution ids such as "12:6"). The report's text shows on its node. A node's warning
(web/js/warnings.js) shows as a toast.

The host and frontend come from COMFY_HOST / COMFY_FRONTEND (harness/paths.py); Nodes 2.0 on/off is a parameter.
Screenshots of every variant go to out/screenshots/ (their paths are printed)."""
import io
import json
import random
import time

import pytest

from harness import pack_node_ids
from harness.examples import CKPT
from harness.frontend import Frontend
from harness.paths import HOST_NAME, ROOT, frontend_version

pytestmark = pytest.mark.frontend  # run again on frontend 1.58.1 by make test

ITERATIONS = 3
SHOTS = ROOT / "out" / "screenshots"
CHART_WIDGET = "invedit_loss_chart"
REPORT_WIDGET = "invedit_report"
LINE_RGB = (0x5a, 0xaa, 0xff)  # the chart's curve colour (loss_chart.js LINE)

# The node an execution id names ("6", or "12:6": node 6 of the subgraph root node 12 instances), walked here
# independently of the pack's own resolver.
_JS_FIND = """const find = (id) => {
  let g = window.app.graph, n = null;
  const parts = String(id).split(':');
  for (let i = 0; i < parts.length; i++) {
    n = g?.getNodeById(parts[i]) ?? g?.getNodeById(Number(parts[i]));
    if (!n) return null;
    if (i < parts.length - 1) g = n.subgraph;
  }
  return n;
};"""

# Where an element is and whether a user sees it: laid out, not hidden, on the screen and not covered at its centre;
# in which renderer's container it sits.
_JS_SHOWN = """const shown = (el, node) => {
  if (!el || !el.isConnected) return {shown: false, why: 'not in the document'};
  const r = el.getBoundingClientRect();
  const vis = el.checkVisibility ? el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) : true;
  const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
  const top = document.elementFromPoint(cx, cy);
  const vue = el.closest('[data-node-id]');
  return {shown: vis && r.width > 20 && r.height > 20 && cx > 0 && cy > 0 && cx < innerWidth && cy < innerHeight
                 && !!top && (top === el || el.contains(top)),
          rect: [r.left, r.top, r.width, r.height], top: top ? top.tagName + '.' + top.className : null,
          host: vue ? 'vue:' + vue.getAttribute('data-node-id') : (el.closest('.dom-widget') ? 'dom-widget' : null)};
};"""

_JS_STATE = """(id) => {
  %s
  %s
  const n = find(id);
  const s = n?.invEditLoss;
  if (!s) return null;
  const w = n.widgets?.find((w) => w.name === '%s');
  const cv = w?.element?.querySelector('canvas');
  let line = 0;
  if (cv && cv.width && cv.height) {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    for (let i = 0; i < d.length; i += 4)
      if (Math.abs(d[i] - %d) < 40 && Math.abs(d[i + 1] - %d) < 40 && Math.abs(d[i + 2] - %d) < 40) line++;
  }
  return {live: s.live, values: s.values, steps: s.steps, drawn: s.drawn, maxDrawnLive: s.maxDrawnLive,
          final: s.final, expected: s.expected, size: [...n.size], linePixels: line,
          view: cv ? shown(cv, n) : {shown: false, why: 'no chart widget'}};
}""" % (_JS_FIND, _JS_SHOWN, CHART_WIDGET, *LINE_RGB)

_JS_REPORT = """(id) => {
  %s
  %s
  const n = find(id);
  const w = n?.widgets?.find((w) => w.name === '%s');
  return w ? {text: w.element.textContent, view: shown(w.element, n)} : null;
}""" % (_JS_FIND, _JS_SHOWN, REPORT_WIDGET)

_JS_SERIALIZED = """(id) => JSON.stringify(window.app.graph.serialize().nodes.find((n) => String(n.id) === String(id)))"""

# What the prompt the frontend would queue now holds for a node (execution id).
_JS_PROMPT_INPUTS = """async (id) => JSON.stringify((await window.app.graphToPrompt()).output[id]?.inputs ?? null)"""

_JS_MODE = """() => ({setting: window.app.extensionManager?.setting?.get?.('Comfy.VueNodes.Enabled') ?? null,
                     vueNodesMode: !!window.LiteGraph?.vueNodesMode,
                     vueNodes: document.querySelectorAll('[data-node-id]').length})"""

# Centre the canvas on a node (execution id; a subgraph's node is shown by opening that subgraph first).
_JS_CENTER = """(id) => {
  %s
  const n = find(id);
  const c = window.app.canvas;
  if (!n || !c) return false;
  if (n.graph && c.graph !== n.graph) {
    const parts = String(id).split(':');
    if (parts.length > 1) c.openSubgraph(n.graph, find(parts.slice(0, -1).join(':')));
    else c.setGraph(n.graph);
  }
  c.centerOnNode(n);
  c.setDirty(true, true);
  return true;
}""" % _JS_FIND

# The node's rectangle on the screen (graph geometry, and the Vue node's element when Nodes 2.0 draws it).
_JS_NODE_RECT = """(id) => {
  %s
  const n = find(id);
  const c = window.app.canvas;
  const cr = c.canvas.getBoundingClientRect();
  const th = window.LiteGraph.NODE_TITLE_HEIGHT ?? 30;
  const [x0, y0] = c.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - th]);
  const [x1, y1] = c.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
  let r = [cr.left + x0, cr.top + y0, cr.left + x1, cr.top + y1];
  const el = document.querySelector(`[data-node-id="${n.id}"]`);
  if (el) {
    const b = el.getBoundingClientRect();
    r = [Math.min(r[0], b.left), Math.min(r[1], b.top), Math.max(r[2], b.right), Math.max(r[3], b.bottom)];
  }
  return r;
}""" % _JS_FIND


def doodl_prompt(seed=None):
    """The DOODL graph; a fresh ``seed`` each call by default, so that no run is served from ComfyUI's cache."""
    seed = random.randrange(1, 2**31) if seed is None else seed
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a circle"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "InvEditDOODLClassifierLoss", "inputs": {
            "classifier": "shapes_colour.safetensors", "architecture": "small_cnn", "target": "blue",
            "num_classes": 0, "normalisation": "none", "mode": "cross_entropy", "weight": 1.0, "crops": 1,
            "crop_power": 0.3, "input_size": 64}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "InvEditDOODLOptimize", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "loss": ["4", 0],
            "latent": ["5", 0], "seed": seed, "steps": 2, "cfg": 3.0, "mix_p": 0.93, "iterations": ITERATIONS,
            "lr": 300.0, "grad_clip": 0.02, "momentum": 0.9, "perturb_std": 1e-4, "keep": "last",
            "backprop": "reversible", "pair_steps": "shared"}},
        "7": {"class_type": "InvEditLossChart", "inputs": {"loss_history": ["6", 2], "width": 256, "height": 128,
                                                          "log_scale": False}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    return p


def report_prompt():
    return {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "InvEditReconstructionReport", "inputs": {"original": ["1", 0],
                                                                     "reconstruction": ["1", 0]}},
    }


@pytest.fixture(scope="module", params=[False, True], ids=["classic", "nodes2"])
def fe(request, server):
    """A page with Nodes 2.0 off or on (the setting is applied in the browser: the host's settings file, shared by
    every server on this host, stays as it is)."""
    with Frontend(server.url, require_nodes=("KSampler", *pack_node_ids()),
                  settings={"Comfy.VueNodes.Enabled": request.param}) as f:
        f.nodes2 = request.param
        f.variant = f"{HOST_NAME}-fe{frontend_version()}-{'nodes2' if request.param else 'classic'}"
        mode = f.page.evaluate(_JS_MODE)
        assert mode["setting"] is request.param and mode["vueNodesMode"] is request.param, mode
        yield f


def _check_renderer(fe):
    mode = fe.page.evaluate(_JS_MODE)
    assert mode["vueNodesMode"] is fe.nodes2, mode
    assert (mode["vueNodes"] > 0) is fe.nodes2, mode  # the Vue renderer really drew the nodes (or did not)


def _screenshot(fe, node, name):
    """A screenshot of the node (and what is around it) on the screen; returns (path, PIL image)."""
    from PIL import Image
    fe.page.evaluate(_JS_CENTER, node)
    time.sleep(0.6)  # a few frames: DOM widgets and Vue nodes follow the canvas on the next animation frames
    x0, y0, x1, y1 = fe.page.evaluate(_JS_NODE_RECT, node)
    pad = 24
    clip = {"x": max(0, x0 - pad), "y": max(0, y0 - pad)}
    clip["width"] = min(1600, x1 + pad) - clip["x"]
    clip["height"] = min(1000, y1 + pad) - clip["y"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{fe.variant}.png"
    png = fe.page.screenshot(clip=clip)
    path.write_bytes(png)
    print(f"screenshot: {path}")
    return path, Image.open(io.BytesIO(png)).convert("RGB")


def _line_pixels(img):
    """Pixels of an RGB image in the chart's curve colour."""
    b = img.tobytes()
    r0, g0, b0 = LINE_RGB
    return sum(1 for i in range(0, len(b), 3)
               if abs(b[i] - r0) < 40 and abs(b[i + 1] - g0) < 40 and abs(b[i + 2] - b0) < 40)


def _screen_line_pixels(fe, rect):
    """Pixels in the chart's curve colour on the screen inside ``rect`` (client coordinates)."""
    from PIL import Image
    x, y, w, h = rect
    x0, y0, x1, y1 = max(0, x), max(0, y), min(1600, x + w), min(1000, y + h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return 0
    x, y, w, h = x0, y0, x1 - x0, y1 - y0
    img = Image.open(io.BytesIO(fe.page.screenshot(clip={"x": x, "y": y, "width": w, "height": h}))).convert("RGB")
    return _line_pixels(img)


def _run_and_watch(fe, server, node, name):
    """Queue the loaded graph, watch the chart of ``node`` (an execution id) while it runs; returns (the history
    entry, the state seen live, the final state)."""
    fe.page.evaluate(_JS_CENTER, node)
    prompt_id = fe.queue()
    seen_live = None
    states = []  # what was seen, for the failure message
    deadline = time.time() + 300
    while time.time() < deadline:  # watch the node while the prompt runs
        state = fe.page.evaluate(_JS_STATE, node)
        if state and (not states or (state["live"], state["view"]) != (states[-1]["live"], states[-1]["view"])):
            states.append({k: state[k] for k in ("live", "final", "linePixels", "view")})
        if (state and not state["final"] and state["live"] >= 2 and state["linePixels"] > 0
                and state["view"]["shown"] and seen_live is None):
            seen_live = state
            seen_live["screenLine"] = _screen_line_pixels(fe, state["view"]["rect"])
            path = SHOTS / f"{name}_live-{fe.variant}.png"
            SHOTS.mkdir(parents=True, exist_ok=True)
            fe.page.screenshot(path=str(path))
            print(f"screenshot: {path}")
        if server.get(f"/history/{prompt_id}").get(prompt_id):
            break
        time.sleep(0.1)
    entry = server.wait(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]
    losses = {k: o["invedit_loss"][0]["values"] for k, o in entry["outputs"].items() if "invedit_loss" in o}
    assert len(losses) == 1, entry["outputs"].keys()
    final = next(iter(losses.values()))  # (keyed "6" in the root graph; inside a subgraph by the host's choice)
    assert len(final) == ITERATIONS + 1
    for _ in range(50):  # the executed message and a redraw reach the page right after the history
        state = fe.page.evaluate(_JS_STATE, node)
        if state["final"] and state["drawn"] == len(final):
            break
        time.sleep(0.1)
    if seen_live is None:
        seen_live = {"never": states}
    return entry, seen_live, state, final


def _assert_chart(fe, state, seen_live, final, name, node):
    # every iteration's value arrived as a live message, in order, equal to the final history
    assert state["live"] == ITERATIONS + 1 and state["expected"] == ITERATIONS + 1
    assert state["values"] == final and state["steps"] == list(range(ITERATIONS + 1))
    # drawn and shown while running: the curve is in the widget's canvas and on the screen
    assert "never" not in seen_live, f"the chart was never seen drawn and shown while the node ran: {seen_live}"
    assert seen_live["maxDrawnLive"] >= 1 and seen_live["screenLine"] > 20, seen_live
    assert state["final"] and state["drawn"] == len(final)  # the final curve stays drawn
    path, img = _screenshot(fe, node, name)
    state = fe.page.evaluate(_JS_STATE, node)
    assert state["view"]["shown"], state["view"]
    assert state["view"]["host"] == (f"vue:{node.split(':')[-1]}" if fe.nodes2 else "dom-widget"), state["view"]
    assert state["linePixels"] > 50, state
    on_screen = _screen_line_pixels(fe, state["view"]["rect"])
    assert on_screen > 50, (on_screen, state["view"])
    assert _line_pixels(img) > 50, path
    _check_renderer(fe)


def test_the_chart_receives_and_draws_every_iteration_live_and_is_not_saved(server, fe):
    wf = fe.api_to_workflow(doodl_prompt())
    node = str(next(n["id"] for n in wf["nodes"] if n["type"] == "InvEditDOODLOptimize"))
    fe.load_workflow(wf)
    before = json.loads(fe.page.evaluate(_JS_SERIALIZED, node))
    entry, seen_live, state, final = _run_and_watch(fe, server, node, "loss_chart")
    assert entry["outputs"][node]["invedit_loss"][0]["values"] == final
    _assert_chart(fe, state, seen_live, final, "loss_chart", node)
    after = json.loads(fe.page.evaluate(_JS_SERIALIZED, node))
    assert sorted(after) == sorted(before)  # no new keys in the saved node
    assert after.get("properties") == before.get("properties")
    assert after.get("widgets_values") == before.get("widgets_values")
    assert "invEditLoss" not in json.dumps(after) and CHART_WIDGET not in json.dumps(after)
    inputs = json.loads(fe.evaluate(_JS_PROMPT_INPUTS, node))
    assert inputs and CHART_WIDGET not in inputs  # nor in the prompt
    chart = entry["outputs"]["8"]["images"]
    assert chart and server.view(chart[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert fe.unexpected_errors() == []


def test_the_chart_of_an_optimiser_inside_a_subgraph_gets_its_points(server, fe):
    wf = fe.api_to_workflow(doodl_prompt())
    inner = next(n["id"] for n in wf["nodes"] if n["type"] == "InvEditDOODLOptimize")
    fe.load_workflow(wf)
    # the user's "Convert to Subgraph" on the optimiser, then save and reopen the workflow
    host = fe.page.evaluate("""(id) => {
      const g = window.app.graph;
      const {node} = g.convertToSubgraph(new Set([g.getNodeById(id)]));
      return node.id;
    }""", inner)
    saved = json.loads(fe.page.evaluate("() => JSON.stringify(window.app.graph.serialize())"))
    assert saved["definitions"]["subgraphs"] and not any(n["type"] == "InvEditDOODLOptimize" for n in saved["nodes"])
    fe.load_workflow(saved)
    inner_now = fe.page.evaluate("""(host) => {
      const sg = window.app.graph.getNodeById(host)?.subgraph;
      return sg ? sg.nodes.find((n) => n.type === 'InvEditDOODLOptimize')?.id ?? null : null;
    }""", host)
    assert inner_now is not None
    node = f"{host}:{inner_now}"  # the execution id the server reports for it
    entry, seen_live, state, final = _run_and_watch(fe, server, node, "loss_chart_subgraph")
    print("subgraph run: history outputs keyed", sorted(entry["outputs"]))
    _assert_chart(fe, state, seen_live, final, "loss_chart_subgraph", node)
    assert fe.unexpected_errors() == []


def test_the_report_text_shows_on_the_node(server, fe):
    wf = fe.api_to_workflow(report_prompt())
    node = str(next(n["id"] for n in wf["nodes"] if n["type"] == "InvEditReconstructionReport"))
    fe.load_workflow(wf)
    before = json.loads(fe.page.evaluate(_JS_SERIALIZED, node))
    fe.page.evaluate(_JS_CENTER, node)
    prompt_id = fe.queue()
    entry = server.wait(prompt_id, timeout=120)
    text = entry["outputs"][node]["text"][0]
    assert "latent MSE" in text
    for _ in range(50):
        rep = fe.page.evaluate(_JS_REPORT, node)
        if rep and rep["text"] == text and rep["view"]["shown"]:
            break
        time.sleep(0.1)
    _screenshot(fe, node, "report")
    rep = fe.page.evaluate(_JS_REPORT, node)
    assert rep and rep["text"] == text, rep
    assert rep["view"]["shown"], rep["view"]
    assert rep["view"]["host"] == (f"vue:{node}" if fe.nodes2 else "dom-widget"), rep["view"]
    after = json.loads(fe.page.evaluate(_JS_SERIALIZED, node))
    assert after.get("widgets_values") == before.get("widgets_values") and REPORT_WIDGET not in json.dumps(after)
    _check_renderer(fe)
    assert fe.unexpected_errors() == []


def warning_prompt(seed=None):
    """An EDICT pair regenerated with the same weights halved by a stock merge (ModelSubtract): the model fingerprint
    differs, so EDICT Regenerate warns (issue 29); a fresh cfg each call keeps ComfyUI's cache out of it."""
    cfg = round(random.uniform(2.0, 4.0), 2) if seed is None else 3.0
    edict = {"mix_p": 0.93, "leapfrog": True, "official_input_scaling": True}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "InvEditEDICTSigmas", "inputs": {"model": ["1", 0], "steps": 4,
                                                             "schedule": "official_980_0", "strength": 1.0}},
        "6": {"class_type": "InvEditEDICTInvert", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "sigmas": ["5", 0],
            "cfg": cfg, "state_dtype": "float64", **edict}},
        "7": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["1", 0], "model2": ["1", 0],
                                                             "multiplier": 0.5}},
        "8": {"class_type": "InvEditEDICTRegenerate", "inputs": {
            "model": ["7", 0], "positive": ["2", 0], "negative": ["3", 0], "pair": ["6", 0], "cfg": cfg, **edict}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}},
    }


# A toast is a PrimeVue ".p-toast-message" in frontends 1.32.9 and 1.49.6, a Reka UI <li data-testid="toast"> in 1.58.1.
_JS_TOASTS = """() => Array.from(document.querySelectorAll('.p-toast-message, [data-testid="toast"]'))
    .map(e => e.innerText)"""


def test_a_warning_of_a_node_shows_as_a_toast(server, fe):
    """web/js/warnings.js: EDICT Regenerate with another model than the pair's runs, and its warning naming the node
    and what differs appears as a toast (not only on the server's console)."""
    fe.load_workflow(fe.api_to_workflow(warning_prompt()))
    prompt_id = fe.queue()
    entry = server.wait(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    toasts = []
    for _ in range(50):
        toasts = fe.page.evaluate(_JS_TOASTS)
        if any("another model" in t for t in toasts):
            break
        time.sleep(0.1)
    hit = [t for t in toasts if "another model" in t]
    assert hit, toasts
    assert "EDICT Regenerate (InvEdit)" in hit[0] and "weight patches differ" in hit[0], hit[0]
