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


def gallery(title: str, images: list[tuple[str, Path]], scale: int = 3) -> "Image.Image":
    """One labelled PNG grid: a title line, then each image (upscaled, nearest) under its label."""
    from PIL import Image, ImageDraw
    tiles = [(label, Image.open(p).convert("RGB")) for label, p in images]
    tiles = [(label, im.resize((im.width * scale, im.height * scale), Image.NEAREST)) for label, im in tiles]
    w = max(210, max((im.width for _, im in tiles), default=0))
    h = max((im.height for _, im in tiles), default=0)
    pad, head, lab = 10, 28, 18
    cols = min(4, max(1, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (pad + cols * (w + pad), head + rows * (lab + h + pad) + pad), (24, 26, 32))
    d = ImageDraw.Draw(sheet)
    d.text((pad, 8), title, fill=(235, 235, 235))
    for k, (label, im) in enumerate(tiles):
        x, y = pad + (k % cols) * (w + pad), head + (k // cols) * (lab + h + pad)
        d.text((x, y + 2), label, fill=(200, 200, 200))
        sheet.paste(im, (x, y + lab))
    return sheet


def labelled_images(workflow: dict, outputs: dict, out: Path, srv) -> list[tuple[str, Path]]:
    """(label, file) of every image the workflow output; previews (in the server's temp folder) are fetched over
    /view into out/previews/."""
    titles = {str(n["id"]): n.get("title") or n["type"] for n in workflow["nodes"]}
    found = []
    for node_id, o in outputs.items():
        imgs = o.get("images", [])
        for i, img in enumerate(imgs):
            label = titles.get(str(node_id), node_id) + (f" ({i + 1}/{len(imgs)})" if len(imgs) > 1 else "")
            path = out / img["subfolder"] / img["filename"]
            if img.get("type") != "output":
                path = out / "previews" / img["filename"]
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(srv.view(img))
            found.append((label, path))
    return found


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
                workflow = json.loads(path.read_text())
                entry = srv.wait(fe.queue_workflow(workflow), timeout=900)
                texts = [o["text"][0] for o in entry["outputs"].values() if "text" in o]
                grid = out / f"gallery_{path.stem}.png"
                gallery(path.name, labelled_images(workflow, entry["outputs"], out, srv)).save(grid)
                rows.append((path.name, "success", time.time() - t, [grid.name], texts))
            except Exception as e:  # report every workflow, then fail at the end
                failures += 1
                rows.append((path.name, f"FAILED: {e}", time.time() - t, [], []))
            print(f"  {path.name}: {rows[-1][1].splitlines()[0]} ({rows[-1][2]:.1f} s)", flush=True)
    lines = [f"# InvEdit demo, {datetime.now():%Y-%m-%d %H:%M}", "",
             "Every workflow in example_workflows/ was loaded into the real ComfyUI frontend, converted and queued "
             "by it, and run by ComfyUI 0.3.75 on the CPU with the embedded shapes-world model (a tiny SD1.5-detectable "
             "UNet, TAESD VAE and CLIP-L-shaped text encoder; docs/shapes_world.md). Each workflow's images are "
             "in one labelled grid, gallery_<workflow>.png; the workflows' own outputs are beside it.", ""]
    for name, status, secs, images, texts in rows:
        lines += [f"## {name}", f"- status: {status}", f"- time: {secs:.1f} s"]
        lines += [f"- gallery: [{i}]({i})" for i in images]
        for text in texts:
            lines += ["", "```", text, "```"]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    print(f"\n{len(rows) - failures}/{len(rows)} workflows succeeded; images and report.md in:\n{out}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
