"""Drive the real ComfyUI web frontend (comfyui-frontend-package, checked against 1.32.9) in headless Chromium.

Everything goes through the frontend's own JavaScript API, so what is tested is what a user gets:

    with ComfyServer() as srv, Frontend(srv.url) as fe:
        fe.workflow_to_prompt(ui_workflow)   # app.loadGraphData + app.graphToPrompt -> {"output", "workflow"}
        pid = fe.queue_workflow(ui_workflow) # app.loadGraphData + app.queuePrompt(0, 1) -> prompt_id
        srv.wait(pid)
        ui = fe.api_to_workflow(api_prompt)  # app.loadApiJson (+ graph.arrange) -> app.graph.serialize()

CLI (starts its own ComfyServer):

    python -m harness.frontend api2ui IN_API.json OUT_UI.json
    python -m harness.frontend check UI.json

JS globals used (1.32.9):
  * ``window.app`` -- the ComfyApp instance.  It is assigned by GraphView *after* ``app.setup()`` has resolved,
    i.e. after the node definitions were fetched and registered with LiteGraph, so its presence is the readiness
    signal.  (``window.comfyAPI.app.app`` is the same object but exists from module load on, before setup; it is
    only used as a fallback accessor, never as the readiness signal.)
  * ``window.LiteGraph.registered_node_types`` -- to confirm node registration and to pre-check node types.
  * ``app.extensionManager.workflow.activeWorkflow`` -- set once the start-up workflow (default graph, or a blank
    one plus the template browser for a "new user") has been loaded; we wait for it so our own load cannot race
    the start-up load.
  * ``app.registerExtension({afterConfigureGraph(missingNodeTypes)})`` -- the frontend's own missing-node report
    from ``loadGraphData`` (the same list it shows in its "missing nodes" dialog).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HARNESS_EXTENSION = "invedit.harness.frontend"

# Console errors that page loads of the frontends (1.32.9, 1.49.6, 1.58.1) produce here; each entry: all substrings
# must occur.
BENIGN_ERRORS: tuple[tuple[str, ...], ...] = (
    ("status of 404", "/user.css"),                      # optional user stylesheet
    ("status of 404", "/favicon.ico"),
    ("status of 404", "/api/userdata"),                  # no workflows/, subgraphs/, comfy.templates.json yet
    ("Content Security Policy", "https://api.comfy.org"),  # registry look-ups, blocked by the page's CSP
    ("Cannot read properties of undefined (reading 'id')", "at onChange"),  # settingStore.set of an
    # unregistered setting during GraphView start-up (frontend bug, harmless)
    ("ComfyApp graph accessed before initialization", "settingStore"),  # 1.49.6 start-up, also with no setting
    # overridden (app.rootGraph read by the frontend's own settings code before the graph exists)
)


class FrontendError(RuntimeError):
    """The frontend failed to do what was asked (load, convert, queue)."""


class MissingNodeTypesError(FrontendError):
    def __init__(self, missing: list[str], context: str = ""):
        self.missing = list(missing)
        super().__init__(f"frontend reports missing node types{(' ' + context) if context else ''}: "
                         f"{', '.join(self.missing)}")


class PromptRejectedError(FrontendError):
    """The server answered the frontend's POST /prompt with an error (normally HTTP 400 validation)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        text = body if isinstance(body, str) else json.dumps(body)
        super().__init__(f"server rejected the prompt queued by the frontend (HTTP {status}): {text[:4000]}")


# --- JavaScript snippets ------------------------------------------------------------------------------------------

_JS_APP = "(window.app ?? window.comfyAPI?.app?.app)"

_JS_READY = """(required) => {
  const a = window.app;  // only assigned after app.setup() (node defs registered)
  if (!a || !a.graph || !a.canvas || !window.LiteGraph) return false;
  const reg = window.LiteGraph.registered_node_types || {};
  for (const t of required) if (!(t in reg)) return false;
  return !!a.extensionManager?.workflow?.activeWorkflow;
}"""

_JS_INSTALL = """(name) => {
  const a = window.app;
  if (window.__inveditHarnessInstalled) return true;
  a.registerExtension({
    name,
    afterConfigureGraph(missingNodeTypes) {
      window.__inveditMissing = (missingNodeTypes || []).map(
        (m) => typeof m === 'string' ? m : (m.type + (m.hint ? ' (' + m.hint + ')' : '')));
    },
  });
  window.__inveditHarnessInstalled = true;
  return true;
}"""

# Every async snippet is raced against a timer: page.evaluate itself has no timeout.
_JS_TIMEOUT_WRAPPER = """async ({arg, ms}) => {
  const body = %s;
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('frontend call timed out after ' + ms + ' ms')), ms);
  });
  try { return await Promise.race([body(arg), limit]); } finally { clearTimeout(timer); }
}"""

_JS_LOAD_WORKFLOW = """async (wf) => {
  const a = %s;
  window.__inveditMissing = null;
  await a.loadGraphData(wf, true, true, 'invedit-harness', {
    showMissingNodesDialog: false, showMissingModelsDialog: false});
  return {missing: window.__inveditMissing, nodes: a.graph.nodes.length};
}""" % _JS_APP

_JS_GRAPH_TO_PROMPT = """async () => {
  const a = %s;
  const p = await a.graphToPrompt();
  // JSON round trip as the frontend does when it saves/posts: drops `undefined` fields (playwright would turn
  // them into null).
  return JSON.stringify({output: p.output, workflow: p.workflow});
}""" % _JS_APP

_JS_QUEUE = """async () => {
  const a = %s;
  if (a.processingQueue) throw new Error('app.queuePrompt is already processing a queue');
  const ok = await a.queuePrompt(0, 1);  // the Queue/Run button's command does exactly this (batch count 1)
  return {ok, nodeErrors: a.lastNodeErrors ?? null};
}""" % _JS_APP

_JS_LOAD_API = """async ({prompt, control}) => {
  const a = %s;
  const reg = window.LiteGraph.registered_node_types;
  const missing = [...new Set(Object.values(prompt).map((n) => n.class_type).filter((t) => !reg[t]))];
  if (missing.length) return {missing};
  // synchronous in 1.32.9, a promise from 1.4x on; it already calls app.graph.arrange()
  await a.loadApiJson(prompt, 'invedit-api-import');
  const g = a.graph;
  const ids = Object.keys(prompt).map(String);
  const have = new Set(g.nodes.map((n) => String(n.id)));
  const lost = ids.filter((id) => !have.has(id));
  if (control) {
    for (const n of g.nodes)
      for (const w of n.widgets ?? [])
        if (w.name === 'control_after_generate') w.value = control;
  }
  // Recompute sizes (widget values may have changed them), then lay out left-to-right by dependency depth.
  for (const n of g.nodes) {
    const s = n.computeSize();
    n.setSize([Math.max(n.size[0], s[0]), Math.max(n.size[1], s[1])]);
  }
  g.arrange(60);
  g.setDirtyCanvas(true, true);
  return {missing: [], lost, workflow: JSON.stringify(g.serialize())};
}""" % _JS_APP


class Frontend:
    """Headless Chromium with the ComfyUI web app of ``server_url`` loaded.

    ``errors``: console errors and uncaught page errors seen so far (strings, in order).
    ``timeout``: seconds allowed for start-up and for each frontend call.
    ``settings``: user settings this page sees instead of the server's (e.g. ``{"Comfy.VueNodes.Enabled": True}``
    for "Nodes 2.0"). They are applied in the browser (GET /api/settings answered with them merged in; their POSTs
    answered without reaching the server), so the host's comfy.settings.json, which every server on this host
    shares, is never changed.
    """

    def __init__(self, server_url: str, *, timeout: float = 60.0, executable_path: str = CHROMIUM,
                 require_nodes: tuple[str, ...] = ("KSampler",), extra_args: tuple[str, ...] = (),
                 settings: dict[str, Any] | None = None):
        self.server_url = server_url.rstrip("/")
        self.settings = dict(settings or {})
        self.timeout = float(timeout)
        self.executable_path = executable_path
        self.require_nodes = tuple(require_nodes)
        self.extra_args = tuple(extra_args)
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self._pw = None
        self.browser = None
        self.page = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "Frontend":
        from playwright.sync_api import sync_playwright

        t0 = time.perf_counter()
        self._pw = sync_playwright().start()
        try:
            self.browser = self._pw.chromium.launch(executable_path=self.executable_path, headless=True,
                                                    args=[*CHROMIUM_ARGS, *self.extra_args],
                                                    timeout=self.timeout * 1000)
            self.page = self.browser.new_page(viewport={"width": 1600, "height": 1000})
            self.page.set_default_timeout(self.timeout * 1000)
            self.page.on("console", self._on_console)
            self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
            if self.settings:
                self.page.route(re.compile(r"^[^?]*/api/settings(/[^/?]*)?/?(\?.*)?$"), self._route_settings)
            self.timings["launch"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            self.page.goto(self.server_url + "/", wait_until="domcontentloaded", timeout=self.timeout * 1000)
            try:
                self.page.wait_for_function(_JS_READY, arg=list(self.require_nodes), polling=100,
                                            timeout=self.timeout * 1000)
            except Exception as e:  # playwright TimeoutError
                state = self._safe_eval("""() => ({app: !!window.app, comfyAPI: !!window.comfyAPI?.app?.app,
                    nodeTypes: Object.keys(window.LiteGraph?.registered_node_types ?? {}).length,
                    activeWorkflow: !!window.app?.extensionManager?.workflow?.activeWorkflow})""")
                raise FrontendError(f"ComfyUI frontend at {self.server_url} not ready within {self.timeout} s "
                                    f"(state {state}); errors: {self.errors[-10:]}") from e
            self.page.evaluate(_JS_INSTALL, HARNESS_EXTENSION)
            self.timings["page_load"] = time.perf_counter() - t1
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            self.browser = self.page = None
            if self._pw is not None:
                self._pw.stop()
                self._pw = None

    def __enter__(self) -> "Frontend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------------------------
    def _route_settings(self, route) -> None:
        """Serve ``self.settings`` over the server's user settings (GET /api/settings[/<id>]) and keep their writes
        in the page (POST /api/settings/<id>; a bulk POST /api/settings is forwarded without them)."""
        req = route.request
        path = req.url.split("?")[0].rstrip("/")
        tail = path.rsplit("/settings", 1)[-1].lstrip("/")
        key = urllib.parse.unquote(tail) if tail else None
        if req.method == "GET" and key is None:
            resp = route.fetch()
            try:
                body = resp.json()
            except Exception:  # noqa: BLE001 - leave anything unexpected alone
                return route.fulfill(response=resp)
            return route.fulfill(response=resp, json={**(body if isinstance(body, dict) else {}), **self.settings})
        if key in self.settings:
            if req.method == "GET":
                return route.fulfill(status=200, json=self.settings[key])
            if req.method == "POST":
                try:
                    self.settings[key] = json.loads(req.post_data or "null")
                except ValueError:
                    pass
                return route.fulfill(status=200, body="")
        if req.method == "POST" and key is None:
            try:
                body = json.loads(req.post_data or "{}")
            except ValueError:
                return route.continue_()
            if isinstance(body, dict) and any(k in self.settings for k in body):
                for k in [k for k in body if k in self.settings]:
                    self.settings[k] = body.pop(k)
                return route.continue_(post_data=json.dumps(body))
        return route.continue_()

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            where = f" ({loc.get('url')})" if loc.get("url") else ""
            self.errors.append(f"console.error: {msg.text}{where}")

    def _safe_eval(self, js: str, arg=None):
        try:
            return self.page.evaluate(js, arg)
        except Exception as e:  # noqa: BLE001 - diagnostics only
            return f"<unavailable: {e}>"

    def evaluate(self, async_fn_js: str, arg: Any = None, timeout: float | None = None) -> Any:
        """Run ``async_fn_js`` (a JS function expression taking one argument) in the page, bounded by a timeout."""
        ms = int((timeout or self.timeout) * 1000)
        return self.page.evaluate(_JS_TIMEOUT_WRAPPER % async_fn_js, {"arg": arg, "ms": ms})

    def new_errors(self, mark: int) -> list[str]:
        return self.errors[mark:]

    def unexpected_errors(self) -> list[str]:
        """``errors`` less the noise every page load of 1.32.9 produces on this offline host (see BENIGN_ERRORS)."""
        return [e for e in self.errors if not any(all(part in e for part in pat) for pat in BENIGN_ERRORS)]

    # -- operations --------------------------------------------------------------------------------------------
    def load_workflow(self, workflow: dict) -> None:
        """``app.loadGraphData(workflow)``; raises MissingNodeTypesError if the frontend reports missing types."""
        if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
            raise FrontendError("not a UI-format workflow (expected a dict with a 'nodes' list); "
                                "API-format prompts go through api_to_workflow()")
        mark = len(self.errors)
        t0 = time.perf_counter()
        res = self.evaluate(_JS_LOAD_WORKFLOW, workflow)
        self.timings["load_workflow"] = time.perf_counter() - t0
        if res.get("missing") is None:
            # afterConfigureGraph never ran: loadGraphData bailed out (it shows an error dialog and returns).
            raise FrontendError(f"frontend failed to load the workflow; errors: {self.new_errors(mark)}")
        if res["missing"]:
            raise MissingNodeTypesError(res["missing"], "while loading the workflow")

    def workflow_to_prompt(self, workflow: dict) -> dict:
        """Load a UI workflow and convert it with the frontend's ``app.graphToPrompt()``.

        Returns ``{"output": <API prompt>, "workflow": <workflow as re-serialised by the frontend>}``."""
        self.load_workflow(workflow)
        t0 = time.perf_counter()
        res = json.loads(self.evaluate(_JS_GRAPH_TO_PROMPT))
        self.timings["graph_to_prompt"] = time.perf_counter() - t0
        return {"output": res["output"], "workflow": res["workflow"]}

    def queue_workflow(self, workflow: dict) -> str:
        """Load a UI workflow and queue it like the Queue/Run button (``app.queuePrompt(0, 1)``).

        Returns the prompt_id from the server's answer to the frontend's POST /prompt; raises
        PromptRejectedError (with the server's error text) if the server refused it."""
        self.load_workflow(workflow)
        return self.queue()

    def queue(self) -> str:
        """Queue the graph the page holds now like the Queue/Run button (``app.queuePrompt(0, 1)``); as
        ``queue_workflow`` without loading anything first."""
        mark = len(self.errors)
        t0 = time.perf_counter()

        def is_prompt_post(r) -> bool:
            return r.request.method == "POST" and r.url.split("?")[0].rstrip("/").endswith("/prompt")

        from playwright.sync_api import Error as PlaywrightError

        try:
            with self.page.expect_response(is_prompt_post, timeout=self.timeout * 1000) as resp_info:
                self.evaluate(_JS_QUEUE)
        except PlaywrightError as e:  # includes playwright's TimeoutError
            raise FrontendError(f"queueing through the frontend failed ({e.message.splitlines()[0]}); "
                                f"errors: {self.new_errors(mark)}") from e
        resp = resp_info.value
        try:
            body = resp.json()
        except Exception:  # noqa: BLE001
            body = resp.text()
        self.timings["queue"] = time.perf_counter() - t0
        if resp.status != 200:
            raise PromptRejectedError(resp.status, body)
        if not isinstance(body, dict) or "prompt_id" not in body:
            raise FrontendError(f"unexpected /prompt answer {body!r}")
        if body.get("node_errors"):
            raise PromptRejectedError(resp.status, body)
        # Not checked: res["ok"].  In 1.32.9 app.queuePrompt returns !lastNodeErrors, and the server's success
        # answer carries node_errors == {} (truthy in JS), so it returns false even when the prompt was queued.
        return body["prompt_id"]

    def api_to_workflow(self, api_prompt: dict, *, control_after_generate: str | None = "fixed") -> dict:
        """Load an API-format prompt with ``app.loadApiJson``, lay it out left-to-right (``graph.arrange``) and
        return ``app.graph.serialize()``.

        ``control_after_generate``: value given to every seed's control widget ("fixed" keeps example workflows
        reproducible; loadApiJson leaves the default "randomize"); None leaves them alone."""
        if not isinstance(api_prompt, dict) or not all(
                isinstance(v, dict) and "class_type" in v for v in api_prompt.values()):
            raise FrontendError("not an API-format prompt (expected {id: {class_type, inputs}})")
        mark = len(self.errors)
        t0 = time.perf_counter()
        res = self.evaluate(_JS_LOAD_API, {"prompt": api_prompt, "control": control_after_generate})
        self.timings["api_to_workflow"] = time.perf_counter() - t0
        if res["missing"]:
            raise MissingNodeTypesError(res["missing"], "in the API prompt")
        if res["lost"]:
            raise FrontendError(f"loadApiJson dropped nodes {res['lost']}; errors: {self.new_errors(mark)}")
        return json.loads(res["workflow"])


# --- CLI ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from .server import ComfyServer

    ap = argparse.ArgumentParser(prog="python -m harness.frontend", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a2u = sub.add_parser("api2ui", help="convert an API-format prompt into a UI workflow via the frontend")
    a2u.add_argument("api_json", type=Path)
    a2u.add_argument("ui_json", type=Path)
    a2u.add_argument("--keep-randomize", action="store_true",
                     help="leave seed controls at 'randomize' instead of setting them to 'fixed'")
    chk = sub.add_parser("check", help="queue a UI workflow through the frontend and wait for it")
    chk.add_argument("ui_json", type=Path)
    chk.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for execution")
    chk.add_argument("--output-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "api2ui":
        api = json.loads(args.api_json.read_text())
        with ComfyServer() as srv, Frontend(srv.url) as fe:
            ui = fe.api_to_workflow(api, control_after_generate=None if args.keep_randomize else "fixed")
            check = fe.workflow_to_prompt(ui)["output"]  # round-trip sanity: same node set
            if set(map(str, check)) != set(map(str, api)):
                print(f"warning: round trip changed node ids {sorted(api)} -> {sorted(check)}", file=sys.stderr)
        args.ui_json.parent.mkdir(parents=True, exist_ok=True)
        args.ui_json.write_text(json.dumps(ui, indent=2) + "\n")
        print(f"wrote {args.ui_json} ({len(ui.get('nodes', []))} nodes, {len(ui.get('links', []))} links)")
        return 0

    workflow = json.loads(args.ui_json.read_text())
    with ComfyServer(output_dir=args.output_dir) as srv, Frontend(srv.url) as fe:
        pid = fe.queue_workflow(workflow)
        print(f"queued {pid} via the frontend ({fe.timings.get('queue', 0):.2f} s)", flush=True)
        entry = srv.wait(pid, timeout=args.timeout)
        print(json.dumps(entry.get("outputs", {}), indent=2))
        print(f"status: {entry['status'].get('status_str')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
