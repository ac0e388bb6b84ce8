// The live loss chart of the pack's optimisers (every node with a LOSS_HISTORY output: DOODL Optimize, h-space
// Train Direction, and later ones). The server pushes one "invedit.loss" message per optimiser step
// (adapters/progress.py: {node, prompt_id, method, label, step, expected, value}; `node` is an execution id, "12:5"
// inside a subgraph); the curve is drawn while the node runs, and the node's ui output "invedit_loss" (the whole
// history) redraws it after the run. The curve is drawn into a <canvas> in a DOM widget (widget_util.js), which the
// classic renderer and Nodes 2.0 both show; the widget is not serialized and the state lives on the node object only
// (node.invEditLoss), so nothing is added to saved workflows or prompts.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { displayWidget, fitNode, nodeForExecutionId } from "./widget_util.js";

const LOSS_TYPE = "INVEDIT_LOSS_HISTORY";
const EVENT = "invedit.loss";
const WIDGET = "invedit_loss_chart";
const CHART_H = 120;
const MIN_W = 320;
const LINE = "#5aaaff";
const chartNodes = new Set();  // node types that draw a chart

function fresh(detail) {
  return {prompt_id: detail?.prompt_id ?? null, method: detail?.method ?? "", label: detail?.label ?? "loss",
          expected: detail?.expected ?? 0, steps: [], values: [], live: 0, final: false, drawn: 0, maxDrawnLive: 0};
}

// The chart's widget, added when the node is created (a widget added later, e.g. during a run, is not always picked up
// by the Vue renderer of 1.32.9); it takes no room until there is a curve to show.
function chartWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;
  const box = document.createElement("div");
  box.className = "invedit-loss-chart";
  box.style.cssText = `display:none;min-height:${CHART_H}px;width:100%;position:relative;overflow:hidden`;
  const canvas = document.createElement("canvas");
  canvas.style.cssText = `display:block;width:100%;height:${CHART_H}px`;
  box.appendChild(canvas);
  widget = displayWidget(node, WIDGET, box, () => (node.invEditLoss ? CHART_H : 0));
  widget.invEditCanvas = canvas;
  if (typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver(() => draw(node));
    ro.observe(canvas);
    const onRemove = widget.onRemove;
    widget.onRemove = function () {
      ro.disconnect();
      return onRemove?.apply(this, arguments);
    };
  }
  return widget;
}

function update(node) {
  const widget = chartWidget(node);
  if (widget.element.style.display === "none") {
    widget.element.style.display = "";
    fitNode(node, MIN_W);
  }
  draw(node);
  node.setDirtyCanvas(true, false);
}

function onLoss({ detail }) {
  const node = nodeForExecutionId(detail?.node);
  if (!node || !chartNodes.has(node.type)) return;
  let s = node.invEditLoss;
  if (!s || s.prompt_id !== detail.prompt_id || s.final || detail.step === 0) s = node.invEditLoss = fresh(detail);
  s.steps.push(detail.step);
  s.values.push(detail.value);
  s.expected = detail.expected;
  s.live += 1;
  update(node);
}

function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toPrecision(4);
}

function draw(node) {
  const s = node.invEditLoss;
  const canvas = node.widgets?.find((w) => w.name === WIDGET)?.invEditCanvas;
  if (!s || !canvas) return;
  // CSS size of the element (0 while a renderer hides it: then the node's width)
  const width = Math.max(canvas.clientWidth || node.size[0] - 20, 60);
  const height = canvas.clientHeight || CHART_H;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 1, right = width - 1, bottom = height - 2, top = 22;
  const pts = s.values.map((v, i) => [s.steps[i], v]).filter(([, v]) => Number.isFinite(v));
  ctx.fillStyle = "#151515";
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.strokeRect(left + 0.5, top + 0.5, right - left - 1, bottom - top - 1);
  ctx.font = "11px monospace";
  ctx.fillStyle = "#ccc";
  const last = s.values[s.values.length - 1];
  const of = s.expected ? ` / ${s.expected}` : "";
  ctx.fillText(`${s.label}: ${fmt(last)}  (${s.values.length}${s.final ? "" : of})`, left + 4, top - 7);
  if (pts.length) {
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    const s0 = pts[0][0], span = (pts[pts.length - 1][0] - s0) || 1;
    const xy = ([st, v]) => [left + 6 + (st - s0) / span * (right - left - 12),
                             bottom - 6 - (v - lo) / (hi - lo) * (bottom - top - 12)];
    ctx.strokeStyle = LINE;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.map(xy).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    ctx.fillStyle = LINE;
    const [lx, ly] = xy(pts[pts.length - 1]);
    ctx.fillRect(lx - 3, ly - 3, 6, 6);
    ctx.fillStyle = "#999";
    ctx.fillText(fmt(hi), right - 70, top + 12);
    ctx.fillText(fmt(lo), right - 70, bottom - 4);
  }
  s.drawn = pts.length;
  if (!s.final) s.maxDrawnLive = Math.max(s.maxDrawnLive, pts.length);
}

app.registerExtension({
  name: "invedit.lossChart",
  setup() {
    api.addEventListener(EVENT, onLoss);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!(nodeData.output ?? []).includes(LOSS_TYPE)) return;
    chartNodes.add(nodeData.name);

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      chartWidget(this);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const h = message?.invedit_loss?.[0];
      if (!h) return;
      const s = this.invEditLoss && this.invEditLoss.values.length ? this.invEditLoss : fresh(h);
      Object.assign(s, {method: h.method, label: h.label, steps: h.steps, values: h.values, final: true});
      this.invEditLoss = s;
      update(this);
    };
  },
});
