// The live loss chart of the pack's optimisers (every node with a LOSS_HISTORY output: DOODL Optimize, h-space
// Train Direction, and later ones). The server pushes one "invedit.loss" message per optimiser step
// (adapters/progress.py: {node, prompt_id, method, label, step, expected, value}); the curve is drawn on the node while
// it runs, and the node's ui output "invedit_loss" (the whole history) redraws it after the run. The state lives on
// the node object only (node.invEditLoss), never in properties or widgets, so nothing is added to saved workflows.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const LOSS_TYPE = "INVEDIT_LOSS_HISTORY";
const EVENT = "invedit.loss";
const CHART_H = 120;
const MIN_W = 320;
const chartNodes = new Set();  // node types that draw a chart

function fresh(detail) {
  return {prompt_id: detail?.prompt_id ?? null, method: detail?.method ?? "", label: detail?.label ?? "loss",
          expected: detail?.expected ?? 0, steps: [], values: [], live: 0, final: false, drawn: 0, maxDrawnLive: 0};
}

function ensureRoom(node) {
  if (node.invEditLossSized) return;
  const need = node.computeSize();
  node.setSize([Math.max(node.size[0], need[0], MIN_W), Math.max(node.size[1], need[1] + CHART_H)]);
  node.invEditLossSized = true;
}

function onLoss({ detail }) {
  const node = app.graph?.getNodeById(detail.node) ?? app.graph?.getNodeById(Number(detail.node));
  if (!node || !chartNodes.has(node.type)) return;
  let s = node.invEditLoss;
  if (!s || s.prompt_id !== detail.prompt_id || s.final || detail.step === 0) s = node.invEditLoss = fresh(detail);
  s.steps.push(detail.step);
  s.values.push(detail.value);
  s.expected = detail.expected;
  s.live += 1;
  ensureRoom(node);
  node.setDirtyCanvas(true, false);
}

function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toPrecision(4);
}

function draw(node, ctx) {
  const s = node.invEditLoss;
  if (!s || !s.values.length || node.flags?.collapsed) return;
  const left = 10, right = node.size[0] - 10, bottom = node.size[1] - 8, top = bottom - CHART_H + 26;
  const pts = s.values.map((v, i) => [s.steps[i], v]).filter(([, v]) => Number.isFinite(v));
  ctx.save();
  ctx.fillStyle = "#151515";
  ctx.fillRect(left, top - 18, right - left, bottom - top + 22);
  ctx.strokeStyle = "#555";
  ctx.strokeRect(left, top, right - left, bottom - top);
  ctx.font = "11px monospace";
  ctx.fillStyle = "#ccc";
  const last = s.values[s.values.length - 1];
  const of = s.expected ? ` / ${s.expected}` : "";
  ctx.fillText(`${s.label}: ${fmt(last)}  (${s.values.length}${s.final ? "" : of})`, left + 2, top - 5);
  if (pts.length) {
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    const s0 = pts[0][0], span = (pts[pts.length - 1][0] - s0) || 1;
    const xy = ([st, v]) => [left + 4 + (st - s0) / span * (right - left - 8),
                             bottom - 4 - (v - lo) / (hi - lo) * (bottom - top - 8)];
    ctx.strokeStyle = "#5aaaff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.map(xy).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    ctx.fillStyle = "#5aaaff";
    const [lx, ly] = xy(pts[pts.length - 1]);
    ctx.fillRect(lx - 2, ly - 2, 4, 4);
    ctx.fillStyle = "#999";
    ctx.fillText(fmt(hi), right - 70, top + 11);
    ctx.fillText(fmt(lo), right - 70, bottom - 3);
  }
  ctx.restore();
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

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const h = message?.invedit_loss?.[0];
      if (!h) return;
      const s = this.invEditLoss && this.invEditLoss.values.length ? this.invEditLoss : fresh(h);
      Object.assign(s, {method: h.method, label: h.label, steps: h.steps, values: h.values, final: true});
      this.invEditLoss = s;
      ensureRoom(this);
      this.setDirtyCanvas(true, false);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      draw(this, ctx);
    };
  },
});
