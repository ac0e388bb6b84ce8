"""`make demo`: start the real ComfyUI headless on 127.0.0.1 with the pack installed, queue every example workflow
through the real web frontend (as a user pressing Run would), and write the images plus a short report into one
output folder, whose path is printed last."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from . import pack_node_ids
from .frontend import Frontend
from .paths import EXAMPLES, ROOT
from .server import ComfyServer


def main() -> int:
    out = ROOT / "out" / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    rows, failures = [], 0
    t0 = time.time()
    with ComfyServer(output_dir=out, log_path=out / "comfyui.log") as srv, \
            Frontend(srv.url, require_nodes=("KSampler", *pack_node_ids())) as fe:
        print(f"ComfyUI {srv.url} up in {time.time() - t0:.1f} s; queueing {len(list(EXAMPLES.glob('*.json')))} "
              f"example workflows", flush=True)
        for path in sorted(EXAMPLES.glob("*.json")):
            t = time.time()
            try:
                entry = srv.wait(fe.queue_workflow(json.loads(path.read_text())), timeout=900)
                images = [f"{i['subfolder']}/{i['filename']}".lstrip("/")
                          for o in entry["outputs"].values() for i in o.get("images", [])]
                texts = [o["text"][0] for o in entry["outputs"].values() if "text" in o]
                rows.append((path.name, "success", time.time() - t, images, texts))
            except Exception as e:  # report every workflow, then fail at the end
                failures += 1
                rows.append((path.name, f"FAILED: {e}", time.time() - t, [], []))
            print(f"  {path.name}: {rows[-1][1].splitlines()[0]} ({rows[-1][2]:.1f} s)", flush=True)
    lines = [f"# InvEdit demo, {datetime.now():%Y-%m-%d %H:%M}", "",
             "Every workflow in example_workflows/ was loaded into the real ComfyUI frontend, converted and queued "
             "by it, and run by ComfyUI 0.3.75 on the CPU with the tiny embedded SD1.5-shaped model (random "
             "weights: images show the mechanics, not a trained model's quality).", ""]
    for name, status, secs, images, texts in rows:
        lines += [f"## {name}", f"- status: {status}", f"- time: {secs:.1f} s"]
        lines += [f"- image: [{i}]({i})" for i in images]
        for text in texts:
            lines += ["", "```", text, "```"]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    print(f"\n{len(rows) - failures}/{len(rows)} workflows succeeded; images and report.md in:\n{out}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
