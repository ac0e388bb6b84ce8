"""The family × node table of issue 26, kept as data the host tests observe (docs/matrix/families.json) and rendered
into docs/families.md and the README's capability table.

The host tests (tests/host/test_family_matrix_host.py) compare every cell they run with the JSON and fail on a
difference; ``INVEDIT_UPDATE_MATRIX=1`` makes them record what they observed instead. ``python tests/matrix_doc.py``
renders the two documents from the JSON; tests/unit/test_matrix_doc.py fails when they are out of date or a cell is
missing. The JSON is what the pack did, not what a test expects of it: each cell's test checks the node's own
property (a bit-exact round trip, a refusal naming the family) independently of it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "matrix" / "families.json"  # the family × node cells; precisions.json, patches.json beside it
DOC = ROOT / "docs" / "families.md"
DOC2 = ROOT / "docs" / "precisions.md"  # the precision and stock-patch tables
README = ROOT / "README.md"
HOSTS = ("0.3.75", "0.33")
NODES = ("DDIM Invert", "EDICT Invert → Regenerate", "EDICT Sampler", "DOODL Optimize", "EMS Edit Sampler (CSDS)",
         "h-space Apply", "h-space Train Direction", "StyleDiffusion Invert", "Null-text Invert", "P2P Edit",
         "CASO Train", "CASO Edit")
SHORT = {"DDIM Invert": "DDIM", "EDICT Invert → Regenerate": "EDICT inv.", "EDICT Sampler": "EDICT smp.",
         "DOODL Optimize": "DOODL", "EMS Edit Sampler (CSDS)": "EMS/CSDS", "h-space Apply": "h-space",
         "h-space Train Direction": "h-space train", "StyleDiffusion Invert": "StyleDiff.",
         "Null-text Invert": "Null-text", "P2P Edit": "P2P", "CASO Train": "CASO train", "CASO Edit": "CASO edit"}
BEGIN, END = "<!-- family-table:begin (tests/matrix_doc.py) -->", "<!-- family-table:end -->"


def host_name() -> str:
    return os.environ.get("COMFY_HOST", "").strip() or "0.3.75"


def _path(table: str) -> Path:
    return JSON.with_name(f"{table}.json")


def load(table: str = "families") -> dict:
    path = _path(table)
    return json.loads(path.read_text()) if path.exists() else {"models": {}, "cells": {}}


def _save(data: dict, table: str) -> None:
    path = _path(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)


def updating() -> bool:
    return os.environ.get("INVEDIT_UPDATE_MATRIX") == "1"


def record(family: str, what: str, value: dict, table: str = "families") -> None:
    """The loaded model's facts (``what`` = "_model"): recorded when updating, else compared."""
    data = load(table)
    have = data["models"].setdefault(host_name(), {}).get(family)
    if updating():
        data["models"][host_name()][family] = value
        _save(data, table)
    else:
        assert have == value, (f"{family} on {host_name()}: the model is now {value}, docs/matrix/families.json says "
                               f"{have}; rerun with INVEDIT_UPDATE_MATRIX=1 and `python tests/matrix_doc.py`")


def check_cell(family: str, node: str, outcome: str, note: str, table: str = "families") -> None:
    """One observed cell: recorded when updating, else compared with the recorded one (the outcome; a refusal's
    text too)."""
    data = load(table)
    cell = {"outcome": outcome, "note": note}
    have = data["cells"].setdefault(host_name(), {}).setdefault(family, {}).get(node)
    if updating():
        data["cells"][host_name()][family][node] = cell
        _save(data, table)
        return
    same = have is not None and have["outcome"] == outcome and (outcome == "works" or have["note"] == note)
    assert same, (f"{node} on {family} ({host_name()}): {outcome} ({note}); docs/matrix/{table}.json says {have}. "
                  f"If the change is meant, rerun with INVEDIT_UPDATE_MATRIX=1 and `python tests/matrix_doc.py`")


def _reasons(data: dict, rows=None, cols=NODES) -> list[str]:
    seen: list[str] = []
    for host in HOSTS:
        cells = data["cells"].get(host, {})
        for row in rows or cells:
            for node in cols:
                c = cells.get(row, {}).get(node)
                if c and c["outcome"] == "refused" and _generic(c["note"], data, row) not in seen:
                    seen.append(_generic(c["note"], data, row))
    return seen


def _generic(note: str, data: dict | None = None, row: str = "") -> str:
    """A refusal as one reason for every node and family it was given for: the node's name (``<node> (InvEdit)``),
    the row's model-config name, the sampling class and shapes replaced."""
    configs = {m.get("config") for h in (data or {}).get("models", {}).values() for r, m in h.items() if r == row}
    text = re.sub(r"^[^:]*\(InvEdit\): ", "", note)
    text = re.sub(r"(?:h-space|[A-Z][\w\-]*)(?: [\w\-()]+?)* \(InvEdit\)", "this node", text)
    for name in sorted(filter(None, configs), key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", "<family>", text, count=1)  # where the message names the model
    text = re.sub(r"sampled with [\w +]+,", "sampled with <its sampling>,", text)
    return re.sub(r"\(\d[\d, ]*\)", "(…)", text)


PRECISIONS = ("fp32", "fp16", "bf16", "fp8_e4m3fn (UNETLoader)", "fp8 file")
PRECISION_COLUMNS = ("stock KSampler", "DDIM Invert", "EDICT Invert → Regenerate", "DOODL Optimize",
                     "One-Step Guidance Sampler", "StyleDiffusion Invert", "Null-text Invert", "CASO Train",
                     "h-space Train Direction", "EMS CSDS autograd")
PATCHES = ("LoraLoaderModelOnly", "ControlNetApplyAdvanced", "FreeU_V2 (tiny SDXL)", "PerturbedAttentionGuidance",
           "SelfAttentionGuidance", "ModelSamplingSD3 on SD1.5", "ModelSamplingSD3 on SD3", "ModelSamplingFlux on SD3")
PATCH_COLUMNS = ("the patch acts", "DDIM Invert", "EDICT Invert → Regenerate", "Asyrp, strength 0",
                 *PRECISION_COLUMNS[3:])


def _grid(data: dict, rows, cols, reasons: list[str]) -> list[str]:
    out = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in rows:
        out.append(f"| {row} | " + " | ".join(_cell(data, row, c, reasons) for c in cols) + " |")
    return out


def render_precisions(precisions: dict, patches: dict) -> str:
    """docs/precisions.md: the precision table and the stock-patch table."""
    r1 = _reasons(precisions, PRECISIONS, PRECISION_COLUMNS)
    r2 = _reasons(patches, PATCHES, PATCH_COLUMNS)
    reasons = r1 + [r for r in r2 if r not in r1]
    out = ["# Precisions and stock patches",
           "",
           "Generated by `python tests/matrix_doc.py` from `docs/matrix/precisions.json` and `patches.json`, which",
           "`tests/host/test_precisions_host.py` and `test_patches_host.py` compare cell by cell with what the nodes",
           "do on each test host (ComfyUI 0.3.75 / 0.33.0). Do not edit by hand. ✓ works, with the property stated",
           "in the column's test; ✗n refused with reason n below; `a / b` where the hosts differ; · not run yet.",
           "",
           "## Precisions",
           "",
           "The shapes world's SD1.5 U-Net (`models/unet/shapes_sd15_unet.safetensors`) loaded with its weights in",
           "each precision: fp16 and bf16 as ComfyUI keeps them on a GPU (`model_options` dtype; this CPU would",
           "otherwise up-cast), fp8 through the stock `UNETLoader`'s `weight_dtype` fp8_e4m3fn, and a diffusion-model",
           "file stored in fp8 through `UNETLoader` default. Every low-precision weight runs through ComfyUI's",
           "manual-cast layers (cast to the compute dtype per layer). Sampling and inversion run; EDICT's float64",
           "state round-trips the LATENT bit for bit over the low-precision model; each gradient node",
           "back-propagates through the manual-cast layers, and afterwards the shared model's weights (values and",
           "dtype), its inference flags and the stock KSampler's result are what they were.",
           "",
           "| precision | " + " | ".join(f"weights / compute ({h})" for h in HOSTS) + " |",
           "|---|" + "---|" * len(HOSTS)]
    for row in PRECISIONS:
        m = [precisions["models"].get(h, {}).get(row) for h in HOSTS]
        out.append(f"| {row} | " + " | ".join(f"{', '.join(x['storage'])} / {x['compute']}" if x else "·"
                                            for x in m) + " |")
    out += ["", "A file stored in fp8 is loaded as ComfyUI chooses for the device: this CPU up-casts it to float32",
            "(its weights are then fp8's values exactly); a GPU with fp8 support keeps it in fp8.", ""]
    out += _grid(precisions, PRECISIONS, PRECISION_COLUMNS, reasons)
    out += ["", "## Stock patches in front of the pack's nodes", "",
            "Each patch on a model it acts on (the shapes world's SD1.5 or SD3, or the tiny SDXL for FreeU_V2, whose",
            "scaling needs 2× and 4× channel levels): a LoRA the harness writes (every attention projection), a",
            "random-weight ControlNet for the U-Net through ControlNetLoader + Apply ControlNet, the shift nodes,",
            "FreeU_V2, PerturbedAttentionGuidance and SelfAttentionGuidance. \"the patch acts\": the stock KSampler's",
            "result moves. DDIM: the stock SamplerCustom under the same patch regenerates. EDICT: the LATENT round",
            "trip stays bit-exact with the patch attached. Asyrp, strength 0: the Asyrp sampler with a zero h-space",
            "shift equals stock euler under the patch bit for bit (with a ControlNet, its shared encoder passes give",
            "the middle block the ControlNet's residual). Gradient nodes: they back-propagate through the patched",
            "model (a ControlNet's control model gets a private copy too) and leave the shared one untouched.", ""]
    out += _grid(patches, PATCHES, PATCH_COLUMNS, reasons)
    out += ["", "## Refusals", ""] + [f"{i}. {r}" for i, r in enumerate(reasons, 1)]
    return "\n".join(out) + "\n"


def _cell(data: dict, family: str, node: str, reasons: list[str]) -> str:
    marks = []
    for host in HOSTS:
        c = data["cells"].get(host, {}).get(family, {}).get(node)
        marks.append("·" if c is None else "✓" if c["outcome"] == "works" else "≈" if c["outcome"] == "inexact" else
                     f"✗{reasons.index(_generic(c['note'], data, family)) + 1}")
    return marks[0] if marks[0] == marks[1] else f"{marks[0]} / {marks[1]}"


def render(data: dict) -> str:
    from harness import families as F
    reasons = _reasons(data, list(F.FAMILIES))
    out = ["# Model families × nodes",
           "",
           "Generated by `python tests/matrix_doc.py` from `docs/matrix/families.json`, which the host tests",
           "(`tests/host/test_family_matrix_host.py`) compare cell by cell with what the nodes do on each test host",
           "(ComfyUI 0.3.75 and 0.33.0). Do not edit by hand.",
           "",
           "Each family is a random-weight model shrunk as far as the host's stock detection allows, written by",
           "`harness/families.py` in ComfyUI's own save format and loaded by the stock `UNETLoader` (HiDream, whose",
           "detection pins the full 17 B model, is built with the stock HiDream config class at its smallest and loaded",
           "as the loader loads a detected model: `families.load_direct`). Text encoders are",
           "stood in for: seeded random tokens of the family's width (the real T5-XXL, Qwen2.5-VL-7B or Mistral are",
           "far too large here), except SD1.5 (the shapes world's CLIP-L), SD2.1 and SDXL (their stock encoders shrunk",
           "to 3 layers). A random TAESD of the family's channel count stands in for the VAE. Random weights prove the",
           "wiring, shapes and exactness, not picture quality.",
           "",
           "Two example workflows wire newer families as their users do, with the stock `UNETLoader`, `CLIPLoader`",
           "and `VAELoader` and the file names of ComfyUI's own templates: `hunyuanimage21_edict_reconstruction.json`",
           "and `zimage_ddim_inversion.json`. `make demo` (and the e2e tests: HunyuanImage 2.1 in `make test`,",
           "Z-Image in `make test-slow`) runs them with the models of `harness/families.py` at text width 768, the",
           "shapes CLIP-L standing in for Qwen2.5-VL / Qwen3-4B (`CLIPLoader` builds a CLIP-L file as a CLIP-L for",
           "those types): verdict \"runs\", not a picture.",
           "",
           "## The models",
           "",
           "| Family | detected as | sampling | parameters (0.3.75 / 0.33) | what detection pins | test run |",
           "|---|---|---|---|---|---|"]
    for label, fam in F.FAMILIES.items():
        m = [data["models"].get(h, {}).get(label) for h in HOSTS]
        known = next((x for x in m if x), {})
        params = " / ".join(f"{x['params'] / 1e6:.2f} M" if x else "·" for x in m)
        runs = ("`make test`" if not fam.heavy else "`make test-slow`" if set(fam.heavy) == set(HOSTS) else
                " / ".join("`make test-slow`" if h in fam.heavy else "`make test`" for h in HOSTS))
        out.append(f"| {label} | `{known.get('config', fam.config)}` | {known.get('sampling', '·')} | {params} | "
                   f"{fam.detected_by} | {runs} |")
    out += ["", "## What each node does on each family", "",
            "✓ works (the node's property checked: EDICT's round trip bit-exact, DDIM's regeneration within its",
            "first-order error, the h-space shift changing the sample, finite losses); ≈ runs, but EDICT's round",
            "trip is within a few float32 ulp instead of bit-exact (below); ✗n refused with reason n below; `a / b`",
            "where the hosts differ (0.3.75 / 0.33); · not run yet.", "",
            "| Family | " + " | ".join(SHORT[n] for n in NODES) + " |",
            "|---|" + "---|" * len(NODES)]
    for label in F.FAMILIES:
        out.append(f"| {label} | " + " | ".join(_cell(data, label, n, reasons) for n in NODES) + " |")
    out += ["", "Columns: " + "; ".join(f"{SHORT[n]} = {n}" for n in NODES) + ".", ""]
    inexact = sorted({(f, c["note"]) for h in HOSTS for f, cells in data["cells"].get(h, {}).items()
                      for c in cells.values() if c["outcome"] == "inexact"})
    if inexact:
        out += ["## Not bit-exact", "",
                "EDICT's state is float64 over a float32 model. Measured on these families: the inverted chain's model",
                "inputs on the step to σ = 0 differ from the regeneration's by 1 float32 ulp, and the difference",
                "survives to the LATENT. The likely cause is the one `EpsFromDenoiser` (samplers/edict.py) describes",
                "and removes for the other families: on that step the inversion rebuilds model inputs as sums of",
                "float32 numbers, which can land on float32 rounding ties that the forward chain's float64 noise",
                "breaks the other way. Not yet removed here:", ""]
        out += [f"- {f}: {note}" for f, note in inexact]
        out.append("")
    out += ["## Refusals", ""]
    out += [f"{i}. {r}" for i, r in enumerate(reasons, 1)]
    return "\n".join(out) + "\n"


def render_readme(data: dict) -> str:
    from harness import families as F
    rows = [BEGIN, "| Node | works on | refuses, naming the nodes that serve it |", "|---|---|---|"]
    for node in NODES:
        works, refused = [], []
        for label in F.FAMILIES:
            cells = [data["cells"].get(h, {}).get(label, {}).get(node) for h in HOSTS]
            cells = [c for c in cells if c]
            if not cells:
                continue
            if all(c["outcome"] == "works" for c in cells):
                works.append(label)
            elif all(c["outcome"] == "inexact" for c in cells):
                works.append(label + " (≈)")
            else:
                refused.append(label)
        rows.append(f"| {node} | {', '.join(works) or '—'} | {', '.join(refused) or '—'} |")
    rows.append(END)
    return "\n".join(rows)


def readme_with_table(text: str, data: dict) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render_readme(data) + text[end:]


def main() -> None:
    import sys
    sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]  # tests/ and the repository (harness.families)
    data = load()
    DOC.write_text(render(data))
    DOC2.write_text(render_precisions(load("precisions"), load("patches")))
    README.write_text(readme_with_table(README.read_text(), data))
    print(f"wrote {DOC.relative_to(ROOT)}, {DOC2.relative_to(ROOT)} and the README's table")


if __name__ == "__main__":
    main()
