// Shows the Reconstruction Report's figures on the node itself after it runs (the node returns them in
// ui.text). Drawn on the canvas rather than kept in a widget, so nothing is added to saved workflows.
import { app } from "../../../scripts/app.js";

const NODE = "InvEditReconstructionReport";
const LINE_H = 15;

app.registerExtension({
  name: "invedit.reconstructionReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      this.invEditReport = text ? text.split("\n") : [];
      const need = this.computeSize();
      need[1] += this.invEditReport.length * LINE_H + 10;
      need[0] = Math.max(need[0], 330);
      this.setSize([Math.max(this.size[0], need[0]), Math.max(this.size[1], need[1])]);
      this.setDirtyCanvas(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      const lines = this.invEditReport;
      if (!lines?.length || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px monospace";
      ctx.fillStyle = "#ddd";
      const top = this.size[1] - lines.length * LINE_H - 4;
      lines.forEach((line, i) => ctx.fillText(line, 10, top + i * LINE_H + 11));
      ctx.restore();
    };
  },
});
