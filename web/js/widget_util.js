// Helpers shared by the pack's display widgets (loss_chart.js, report.js).
//
// Both draw into a DOM widget (`node.addDOMWidget`), not in `onDrawForeground`: with "Nodes 2.0"
// (`Comfy.VueNodes.Enabled`) LGraphCanvas.drawNode returns before any node body drawing, so the foreground hook never
// runs, while a DOM widget's element is shown by both renderers (classic: positioned over the canvas; Nodes 2.0:
// moved into the Vue node by WidgetDOM). The widget is added when the node is created (Nodes 2.0 of 1.32.9 does not
// always show a widget added later, e.g. while the prompt runs), last in the widget list, with `serialize = false`
// (nothing in the saved workflow's widgets_values) and `options.serialize = false` (nothing in the API prompt).
// Checked on frontends 1.32.9, 1.49.6 and 1.58.1 (tests/e2e/test_loss_chart.py).
import { app } from "../../../scripts/app.js";

function byId(graph, id) {
  return graph?.getNodeById(id) ?? graph?.getNodeById(Number(id)) ?? null;
}

// The node an execution id names: "6" in the root graph, "12:5" node 5 of the subgraph that root node 12 instances
// (any depth). `app.graph` is the root graph on every supported frontend, and `getNodeById` only searches the graph
// it is called on, so the path is walked through each subgraph node's `subgraph`.
export function nodeForExecutionId(id) {
  if (id == null) return null;
  const parts = String(id).split(":");
  let graph = app.graph;
  let node = null;
  for (let i = 0; i < parts.length; i++) {
    node = byId(graph, parts[i]);
    if (!node) return null;
    if (i < parts.length - 1) {
      graph = node.subgraph;
      if (!graph) return null;
    }
  }
  return node;
}

// Adds (once) a non-serialized DOM widget named `name` whose element is `element`; `height()` gives its height in
// graph units. Returns the widget.
export function displayWidget(node, name, element, height) {
  const found = node.widgets?.find((w) => w.name === name);
  if (found) return found;
  const widget = node.addDOMWidget(name, "invedit_display", element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: height,
    getMaxHeight: height,
  });
  widget.serialize = false;
  widget.options.serialize = false;
  return widget;
}

// Grows the node (classic renderer; Nodes 2.0 sizes the node from its DOM) so that its widgets fit.
export function fitNode(node, minWidth) {
  const need = node.computeSize();
  const w = Math.max(node.size[0], need[0], minWidth);
  const h = Math.max(node.size[1], need[1]);
  if (w !== node.size[0] || h !== node.size[1]) node.setSize([w, h]);
  node.setDirtyCanvas(true, true);
}
