// Shows the Reconstruction Report's figures on the node itself after it runs (the node returns them in ui.text), as
// text in a DOM widget (widget_util.js) that the classic renderer and Nodes 2.0 both show. The widget is not
// serialized, so nothing is added to saved workflows or prompts.
import { app } from "../../../scripts/app.js";
import { displayWidget, fitNode } from "./widget_util.js";

const NODE = "InvEditReconstructionReport";
const WIDGET = "invedit_report";
const LINE_H = 15;

function reportHeight(node) {
  const n = node.invEditReport?.length ?? 0;
  return n ? n * LINE_H + 10 : 0;
}

function reportWidget(node) {
  const found = node.widgets?.find((w) => w.name === WIDGET);
  if (found) return found;
  const pre = document.createElement("pre");
  pre.className = "invedit-report";
  pre.style.cssText = "display:none;margin:0;padding:4px 6px;box-sizing:border-box;width:100%;overflow:auto;" +
    `font:12px/${LINE_H}px monospace;white-space:pre;color:var(--input-text,#ddd);` +
    "background:var(--comfy-input-bg,#222);border-radius:4px;user-select:text";
  return displayWidget(node, WIDGET, pre, () => reportHeight(node));
}

app.registerExtension({
  name: "invedit.reconstructionReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;

    // The widget is added when the node is created (a widget added later is not always picked up by the Vue
    // renderer of 1.32.9); it takes no room until there is a report to show.
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      reportWidget(this);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      this.invEditReport = text ? text.split("\n") : [];
      const widget = reportWidget(this);
      widget.element.textContent = this.invEditReport.join("\n");
      widget.element.style.minHeight = `${reportHeight(this)}px`;
      widget.element.style.display = this.invEditReport.length ? "" : "none";
      fitNode(this, 330);
    };
  },
});
