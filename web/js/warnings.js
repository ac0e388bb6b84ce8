// The pack's warnings as toasts: the server sends "invedit.warning" ({node, text}: adapters/fingerprint.py `warn`)
// when a node ran but its result may not be what the user expects, e.g. an EDICT pair regenerated with another
// model than the one that inverted it. The same text is on the console. Frontends without the toast service (older
// than 1.10) log it to the browser console only.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const EVENT = "invedit.warning";

function onWarning(event) {
  const { text } = event.detail ?? {};
  if (!text) return;
  const toast = app.extensionManager?.toast;
  if (toast?.add) {
    toast.add({ severity: "warn", summary: "InvEdit", detail: text, life: 15000 });
  } else {
    console.warn(text);
  }
}

app.registerExtension({
  name: "invedit.warnings",
  setup() {
    api.addEventListener(EVENT, onWarning);
  },
});
