"""`make demo`: start the real ComfyUI headless on 127.0.0.1 with the pack installed, queue every example workflow
through the real web frontend (as a user pressing Run would), and write the images plus a short report into one
output folder, whose path is printed last. The report gives the shapes-world judges' verdict on every result next to
what the workflow's title promises (examples.PROMISES); each workflow's gallery also becomes its thumbnail in the
template browser (example_workflows/<name>.jpg)."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from . import pack_node_ids
from .frontend import Frontend
from .paths import COMFY_VERSION, EXAMPLES, ROOT, frontend_version
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


def thumbnail(gallery_png: Path, path: Path, width: int = 512) -> None:
    """The template browser's picture of a workflow (example_workflows/<name>.jpg, served beside the JSON): its
    gallery from this demo run."""
    from PIL import Image
    im = Image.open(gallery_png).convert("RGB")
    im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS).save(path, quality=88)


def load_images(paths: list[Path]):
    import numpy as np
    import torch
    from PIL import Image
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0)
                        .permute(2, 0, 1) for p in paths])


def describe_scene(v) -> str:
    """A scene judge's verdict (harness/scenes/judges.py) in words."""
    objs = ", ".join(f"{o['size']} {o['colour']} {o['shape']}" for o in v.objects) or "none"
    return f"objects: {objs}; background: {v.texture}; style: {v.style}"


def keeps(value, want: str) -> bool:
    """A judged value against a promise's: "not X" is anything but X."""
    return value != want[4:] if want.startswith("not ") else value == want


def scene_keeps(promise: dict, seen, source=None) -> bool:
    """Whether a scenes-world result keeps an examples.SCENE_PROMISES entry: ``texture`` / ``style`` a name (or
    "not <name>"); ``objects`` "kept" (the source's objects, as the judge reads them: count, size, colour, shape,
    left to right) or one entry of words per object, left to right, each word its size, colour or shape."""
    if any(k in promise and not keeps(getattr(seen, k), promise[k]) for k in ("texture", "style")):
        return False
    want = promise.get("objects")
    if want == "kept":
        want = [f"{o['size']} {o['colour']} {o['shape']}" for o in source.objects]
    if want is None:
        return True
    return len(seen.objects) == len(want) and all(
        w in (o["size"], o["colour"], o["shape"]) for o, words in zip(seen.objects, want) for w in words.split())


def _scene_verdicts(promise: dict, sources, results, judge) -> list[str]:
    from .scenes import judges as J
    seen, src = J.read(judge, results), J.read(judge, sources) if sources is not None else None
    wants = ", ".join(f"{k} {v if isinstance(v, str) else ' | '.join(v)}" for k, v in promise.items())
    return [f"result {i + 1}: {describe_scene(v)} — the title promises {wants}: "
            f"{'**yes**' if scene_keeps(promise, v, src[i] if src else None) else '**NO**'}"
            for i, v in enumerate(seen)]


def verdicts(name: str, outputs: dict, out: Path, judges, scene_judge=None) -> list[str]:
    """The judges' verdict on every result image the workflow saved, against its source, and whether it keeps the
    title's promise (examples.PROMISES by the shapes-world judges, examples.SCENE_PROMISES by the scene judge)."""
    from .examples import PROMISES, RANDOM_WEIGHTS, RESULTS_ONLY, SCENE_PROMISES
    if name in RANDOM_WEIGHTS:  # a template run with random weights: the wiring, not a picture
        return [f"random-weight {RANDOM_WEIGHTS[name]} (the template's wiring, no picture claim): **runs**"]
    promise = PROMISES.get(name, SCENE_PROMISES.get(name))
    saved = [out / img["subfolder"] / img["filename"] for o in outputs.values() for img in o.get("images", [])
             if img.get("type") == "output"]
    if promise is None or not saved:
        return []
    images = load_images(saved)
    if name in RESULTS_ONLY:
        sources, results = None, images
    else:
        half = images.shape[0] // 2
        sources, results = images[:half], images[half:]
    if name in SCENE_PROMISES:
        return _scene_verdicts(promise, sources, results, scene_judge)
    lines = []
    for i, v in enumerate(judges.judge(results, sources)):
        kept = all(keeps(getattr(v, k), want) for k, want in promise.items())
        lines.append(f"result {i + 1}: {v.describe()} — the title promises "
                     f"{', '.join(f'{k} {want}' for k, want in promise.items())}: {'**yes**' if kept else '**NO**'}")
    return lines


def main(names: list[str] | None = None) -> int:
    """Every example workflow, or those named (``python -m harness.demo zimage_ddim_inversion``)."""
    paths = sorted(p for p in EXAMPLES.glob("*.json") if not names or p.stem in names)
    if names and len(paths) != len(set(names)):
        raise SystemExit(f"no example workflow named {sorted(set(names) - {p.stem for p in paths})}; "
                         f"see example_workflows/")
    out = ROOT / "out" / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    rows, failures = [], 0
    from .paths import BASE
    from .shapes.judges import Judges
    from .tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    judges = Judges(BASE / "models" / CLASSIFIER_DIR, CLASSIFIERS)
    from .scenes.judges import load_judge
    from .tiny_models import SCENES_WEIGHTS
    scene_judge = load_judge(SCENES_WEIGHTS / "scenes_judge.safetensors")
    t0 = time.time()
    with ComfyServer(output_dir=out, log_path=out / "comfyui.log") as srv, \
            Frontend(srv.url, require_nodes=("KSampler", *pack_node_ids())) as fe:
        print(f"ComfyUI {srv.url} up in {time.time() - t0:.1f} s; queueing {len(paths)} example workflows",
              flush=True)
        for path in paths:
            t = time.time()
            try:
                workflow = json.loads(path.read_text())
                entry = srv.wait(fe.queue_workflow(workflow), timeout=900)
                texts = [o["text"][0] for o in entry["outputs"].values() if "text" in o]
                grid = out / f"gallery_{path.stem}.png"
                gallery(path.name, labelled_images(workflow, entry["outputs"], out, srv)).save(grid)
                judged = verdicts(path.stem, entry["outputs"], out, judges, scene_judge)
                thumbnail(grid, EXAMPLES / f"{path.stem}.jpg")
                rows.append((path.name, "success", time.time() - t, [grid.name], texts, judged))
            except Exception as e:  # report every workflow, then fail at the end
                failures += 1
                rows.append((path.name, f"FAILED: {e}", time.time() - t, [], [], []))
            print(f"  {path.name}: {rows[-1][1].splitlines()[0]} ({rows[-1][2]:.1f} s)", flush=True)
            for line in rows[-1][5]:
                print(f"    {line}", flush=True)
    lines = [f"# InvEdit demo, {datetime.now():%Y-%m-%d %H:%M}", "",
             "Every workflow in example_workflows/ was loaded into the real ComfyUI frontend, converted and queued "
             f"by it (frontend {frontend_version()}), and run by ComfyUI {COMFY_VERSION} on the CPU with the embedded "
             "shapes-world model (a tiny SD1.5-detectable UNet, TAESD VAE and CLIP-L-shaped text encoder; "
             "docs/shapes_world.md). Each workflow's images are "
             "in one labelled grid, gallery_<workflow>.png; the workflows' own outputs are beside it.", ""]
    kept = broken = runs = 0
    for name, status, secs, images, texts, judged in rows:
        lines += [f"## {name}", f"- status: {status}", f"- time: {secs:.1f} s"]
        lines += [f"- gallery: [{i}]({i})" for i in images]
        lines += [f"- verdict, {line}" for line in judged]
        kept += sum(line.endswith("**yes**") for line in judged)
        broken += sum(line.endswith("**NO**") for line in judged)
        runs += sum(line.endswith("**runs**") for line in judged)
        for text in texts:
            lines += ["", "```", text, "```"]
        lines.append("")
    lines.insert(4, f"Judges (harness/shapes/judges.py: the colour and shape classifiers, the object's centre and area, "
                    f"the background PSNR outside the source object): {kept} results keep their workflow title's "
                    f"promise, {broken} do not; {runs} templates ran with random weights (no picture claim).\n")
    (out / "report.md").write_text("\n".join(lines))
    print(f"\n{len(rows) - failures}/{len(rows)} workflows succeeded; {kept} results keep their title's promise, "
          f"{broken} do not; {runs} random-weight templates ran; images and report.md in:\n{out}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
