"""Misuse probes against a real server, generated from /object_info (issue 12). For every pack node:

- every Combo at a value outside its list, every number below its min, above its max, at NaN, +inf and -inf;
- every file input (found by putting a file in each of the pack's model folders and seeing which combos list it) at
  a missing, truncated, renamed-pickle, wrong-kind and wrong-shape file (a folder for the CLIP inputs);
- every file input at a file whose metadata disagrees with its tensors, or does not parse (issue 29);
- every save name (a STRING of an output node) at traversal, absolute, overlong, non-ASCII and empty names;
- every node with a MODEL fed the other world's model, the other world's text and latents, or an artifact made with
  another model of the family (issue 29); every prompt input with ``embedding:`` names (issue 29);
- long and chained workflows (issue 30): an EDICT inversion too long for its mix_p, a CASO save whose later names
  outgrow the limit, latents the report's VAE cannot decode, P2P Edit's noise from another schedule;
- long nodes interrupted mid-run.

Each case is a whole graph (the node's link inputs fed by stock or pack provider nodes, its output into PreviewAny)
POSTed to /prompt, and must be refused with HTTP 400 naming the node and the input, or fail at execution with a
message naming the node, the problem and the fix. After them: the server still runs a valid prompt, the pickle's
payload never ran (a marker file), no file appeared outside the pack's folders, no existing file changed, no
half-written file is left, and a stock and a pack workflow give the same pixels as on a fresh server (no patch
leaks, interrupts leave nothing behind). Prints how many cases it tried per node and kind."""
import collections
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness import pack_node_ids
from harness.examples import CKPT
from harness.paths import BASE
from harness.server import ComfyServer, PromptFailed, ServerError

MODELS = BASE / "models"
# the pack's model folders (nodes/folders.py) and what one entry is: a .safetensors file, or a CLIP folder
PACK_FOLDERS = {"invedit_classifiers": "file", "invedit_aesthetic": "file", "hspace_directions": "file",
                "invedit_value_embeds": "file", "embeddings": "file",
                "invedit_clip": "folder"}
PROBE = "probe_"  # every file the probes make starts so; removed at the end
# a message names the fix: after a ';' (or in a sentence of its own), what to do
FIX = re.compile(r"(;|\. )[^;]*\b(use|give|type|swap|split|put|pick|choose|save|replace|convert|train|connect|remove|"
                 r"rename|set|export|lower|raise|make|encode|invert|clear|shorten|widen)\b", re.I)

SMALL = {"width": 64, "height": 64, "batch_size": 1}
# type -> (provider node, output index, fixed inputs) for the link inputs of the graphs the probes build
PROVIDERS = {
    "MODEL": ("CheckpointLoaderSimple", 0, {"ckpt_name": CKPT}),
    "CLIP": ("CheckpointLoaderSimple", 1, {"ckpt_name": CKPT}),
    "VAE": ("CheckpointLoaderSimple", 2, {"ckpt_name": CKPT}),
    "CONDITIONING": ("CLIPTextEncode", 0, {"text": "a red circle"}),
    "LATENT": ("EmptyLatentImage", 0, SMALL),
    "SIGMAS": ("BasicScheduler", 0, {"scheduler": "normal", "steps": 4, "denoise": 1.0}),
    "IMAGE": ("EmptyImage", 0, {"width": 64, "height": 64, "batch_size": 1, "color": 0}),
    "INVEDIT_HSPACE_DIRECTION": ("InvEditHSpaceFromPrompts", 0, {"steps": 4}),
    "INVEDIT_PIXEL_LOSS": ("InvEditDOODLClassifierLoss", 0, {}),
    "INVEDIT_LOSS_HISTORY": ("InvEditDOODLOptimize", 2, {}),
    "INVEDIT_VALUE_EMBED": ("InvEditNullTextInvert", 0, {"steps": 3, "inner_steps": 2}),
    "INVEDIT_CLASSIFIER": ("InvEditClassifierLoad", 0, {"classifier": "shapes_colour.safetensors"}),
    "INVEDIT_CASO_EMBEDDING": ("InvEditCASOTrain", 0, {"steps": 1, "batch_size": 1}),
}

# types no toy file can provide: the stock CLIPVisionLoader recognises full-size towers only (ViT-L and up, 300 M+
# parameters); the nodes that need one are probed in the host tests (test_caso_host: the linear probe's errors)
UNPROVIDABLE = {"CLIP_VISION"}

# widgets whose default alone does not run (the CLIP loss needs a target text or images)
RUNNABLE = {"InvEditDOODLCLIPLoss": {"text": "a blue circle"}}


class Builder:
    """Valid API prompts around one node: required widgets at their defaults (a Combo at its first option), required
    links from PROVIDERS (built the same way), one PreviewAny on the node's first output."""

    def __init__(self, info: dict):
        self.info, self.prompt, self.made = info, {}, {}

    def node(self, class_type: str, fixed: dict | None = None) -> str:
        fixed = {**RUNNABLE.get(class_type, {}), **(fixed or {})}
        key = (class_type, json.dumps(fixed, sort_keys=True))
        if key in self.made:
            return self.made[key]
        spec = self.info[class_type]["input"].get("required", {})
        inputs = {}
        for name, (kind, *rest) in spec.items():
            opts = rest[0] if rest else {}
            if fixed and name in fixed:
                inputs[name] = fixed[name]
            elif isinstance(kind, list) or kind == "COMBO":
                options = kind if isinstance(kind, list) else opts.get("options", [])
                if not options:
                    raise LookupError(f"{class_type}.{name} has no options here")
                inputs[name] = options[0]
            elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                inputs[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[kind])
            elif kind in PROVIDERS:
                provider, index, given = PROVIDERS[kind]
                inputs[name] = [self.node(provider, given or None), index]
            else:
                raise LookupError(f"no provider for {kind} ({class_type}.{name})")
        inputs.update({k: v for k, v in fixed.items() if k not in inputs})  # optional inputs given
        nid = str(len(self.prompt) + 1)
        self.prompt[nid] = {"class_type": class_type, "inputs": inputs}
        self.made[key] = nid
        return nid


def with_preview(b: Builder, info: dict, target: str) -> tuple[dict, str]:
    """The builder's prompt with a PreviewAny on the target's first output (where it has outputs), and the target."""
    if info[b.prompt[target]["class_type"]].get("output"):
        b.prompt[str(len(b.prompt) + 1)] = {"class_type": "PreviewAny", "inputs": {"source": [target, 0]}}
    return b.prompt, target


def valid_graph(info: dict, node_type: str) -> tuple[dict, str]:
    b = Builder(info)
    return with_preview(b, info, b.node(node_type))


def cases(info: dict):
    """(node type, input, kind, value) for every widget probe."""
    for node_type in pack_node_ids():
        spec = info[node_type]["input"].get("required", {})
        for name, (kind, *rest) in spec.items():
            opts = rest[0] if rest else {}
            if isinstance(kind, list) or kind == "COMBO":
                yield node_type, name, "combo outside its list", "no-such-option"
            elif kind in ("INT", "FLOAT"):
                if "min" in opts:
                    yield node_type, name, "number below min", opts["min"] - 1
                if "max" in opts:
                    yield node_type, name, "number above max", opts["max"] + 1
                yield node_type, name, "number at NaN", math.nan
                yield node_type, name, "number at +inf", math.inf
                yield node_type, name, "number at -inf", -math.inf


def needs_unprovidable(info: dict, node_type: str) -> bool:
    return any(kind in UNPROVIDABLE for kind, *_ in info[node_type]["input"].get("required", {}).values())


def names_input(errors: list, name: str) -> bool:
    """Whether a node's validation errors name ``name``: ComfyUI's own (bounds, conversion) carry it as input_name;
    the pack's validate_inputs says ``name = value`` (ComfyUI repeats its message under every input it checks)."""
    for e in errors:
        if e.get("type") == "custom_validation_failed":
            if f"{name} = " in e.get("details", ""):
                return True
        elif e.get("extra_info", {}).get("input_name") == name:
            return True
    return False


def print_table(title: str, tried: collections.Counter) -> None:
    print(f"\n{title}: {sum(tried.values())} cases over {len({n for n, _ in tried})} pack nodes")
    print("| node | kind | cases |\n|---|---|---|")
    for (node_type, kind), n in sorted(tried.items()):
        print(f"| {node_type} | {kind} | {n} |")


def test_every_bad_widget_value_of_every_pack_node_is_refused_by_name(server, probe_files, capsys):
    info = server.object_info()
    tried, skipped = collections.Counter(), []
    failures = []
    for node_type, name, kind, value in cases(info):
        try:
            prompt, target = valid_graph(info, node_type)
        except LookupError as e:
            skipped.append(f"{node_type}.{name}: {e}")
            continue
        prompt[target]["inputs"][name] = value
        try:
            server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
            failures.append(f"{node_type}.{name} = {value!r} ({kind}) was accepted")
        except ServerError as e:
            errors = e.body.get("node_errors", {}).get(target, {}) if isinstance(e.body, dict) else {}
            if e.status != 400 or not names_input(errors.get("errors", []), name):
                failures.append(f"{node_type}.{name} = {value!r} ({kind}): HTTP {e.status}, {json.dumps(errors)[:300]}")
        tried[node_type, kind] += 1
    with capsys.disabled():
        print_table("misuse probes, widget values", tried)
        for s in skipped:
            print(f"skipped (no provider here): {s}")
    assert not failures, failures
    # every pack node is built (probe_files puts an aesthetic head and a direction in their empty folders), but those
    # with an input of an UNPROVIDABLE type
    skipped = [x for x in skipped if not any(f"no provider for {t} " in x for t in UNPROVIDABLE)]
    assert not skipped and {n for n, _ in tried} == {c[0] for c in cases(info) if not needs_unprovidable(info, c[0])}, \
        skipped
    assert sum(tried.values()) >= 280
    # the server still serves: a valid graph of a pack node runs to success
    prompt, _ = valid_graph(info, "InvEditEDICTSigmas")
    assert server.wait(server.queue(prompt), timeout=120)["status"]["status_str"] == "success"


@pytest.mark.parametrize("node_type", ["InvEditSamplerEDICT", "InvEditHSpaceApply", "InvEditDOODLOptimize"])
def test_a_combo_message_names_the_node_the_value_and_the_options(server, node_type):
    info = server.object_info()
    prompt, target = valid_graph(info, node_type)
    name = next(n for n, (k, *r) in info[node_type]["input"]["required"].items()
                if isinstance(k, list) or k == "COMBO")
    prompt[target]["inputs"][name] = "Official"
    with pytest.raises(ServerError) as e:
        server.post("/prompt", {"prompt": prompt, "client_id": server.client_id})
    text = json.dumps(e.value.body["node_errors"][target])
    assert info[node_type]["display_name"] in text and "'Official' is not one of its options" in text


# -- files ---------------------------------------------------------------------------------------------------------

class Unpickled:
    """A pickle payload: unpickling it creates the marker file (the probes assert it never exists)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def snapshot(*roots: Path) -> dict:
    """{path: (size, mtime_ns)} of every file under ``roots`` (ComfyUI's temp/ aside: previews go there)."""
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and BASE / "temp" not in p.parents:
                st = p.stat()
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wrong_shape(src: Path, dst: Path) -> None:
    """``src``'s tensors and metadata with its largest tensor one row longer."""
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    big = max(tensors, key=lambda k: tensors[k].numel())
    tensors[big] = torch.cat([tensors[big], tensors[big][:1]])
    save_file(tensors, str(dst), metadata=meta)


def clean_probes() -> None:
    for folder in PACK_FOLDERS:
        for p in (MODELS / folder).glob(PROBE + "*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


@pytest.fixture(scope="module")
def probe_files(server, tmp_path_factory):
    """The good file of each pack folder (a classifier and the CLIP of the host; a direction saved by h-space Save
    through the server; an aesthetic head made for the CLIP) and the pickle's marker path. Removes every probe file
    at the end."""
    clean_probes()
    marker = tmp_path_factory.mktemp("pickle") / "payload-ran"
    info = server.object_info()
    b = Builder(info)
    b.node("InvEditHSpaceSave", {"name": PROBE + "good_direction"})
    b.node("InvEditValueSave", {"name": PROBE + "good_value"})
    b.node("InvEditCASOSave", {"filename_prefix": PROBE + "good_caso"})
    server.wait(server.queue(b.prompt), timeout=300)
    clip = MODELS / "invedit_clip" / "shapes-toy-clip"
    dim = json.loads((clip / "config.json").read_text())["projection_dim"]
    head = MODELS / "invedit_aesthetic" / (PROBE + "good_head.safetensors")
    head.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.randn(1, dim) / dim ** 0.5, "bias": torch.full((1,), 5.0)}, str(head))
    good = {"invedit_classifiers": MODELS / "invedit_classifiers" / "shapes_colour.safetensors",
            "hspace_directions": MODELS / "hspace_directions" / (PROBE + "good_direction.safetensors"),
            "invedit_value_embeds": MODELS / "invedit_value_embeds" / (PROBE + "good_value.safetensors"),
            "embeddings": MODELS / "embeddings" / (PROBE + "good_caso_red.safetensors"),
            "invedit_aesthetic": head, "invedit_clip": clip}
    assert all(p.exists() for p in good.values()), good
    yield good, marker
    clean_probes()


def file_inputs(server) -> dict:
    """{(node type, input): pack folder} of every combo that lists the files of a pack folder, found by putting a
    sentinel in each folder and reading /object_info."""
    made = []
    for folder, entry in PACK_FOLDERS.items():
        p = MODELS / folder / f"{PROBE}sentinel_{folder}"
        p.parent.mkdir(parents=True, exist_ok=True)
        if entry == "folder":
            p.mkdir(parents=True, exist_ok=True)
            (p / "config.json").write_text("{}")
        else:
            p = p.with_suffix(".safetensors")
            p.write_bytes(b"")
        made.append((folder, p.name, p))
    try:
        info = server.object_info()
    finally:
        for _, _, p in made:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    found = {}
    for node_type in pack_node_ids():
        for name, (kind, *rest) in info[node_type]["input"].get("required", {}).items():
            options = kind if isinstance(kind, list) else (rest[0].get("options", []) if rest and kind == "COMBO"
                                                           else [])
            for folder, entry_name, _ in made:
                if entry_name in options:
                    found[node_type, name] = folder
    return found


def make_case(kind: str, folder: str, good: dict, marker: Path) -> Path:
    """The probe entry of ``kind`` in ``folder`` (a file, or a CLIP folder whose model.safetensors is the broken
    file); for "missing" the entry exists now and is deleted after the server has listed it."""
    entry = PACK_FOLDERS[folder]
    dst = MODELS / folder / (PROBE + kind.replace("-", "_") + ("" if entry == "folder" else ".safetensors"))
    src = good[folder]
    target = dst
    if entry == "folder":
        shutil.copytree(src, dst)
        target, src = dst / "model.safetensors", src / "model.safetensors"
    if kind == "missing":
        if entry == "file":
            shutil.copyfile(src, target)
    elif kind == "truncated":
        data = src.read_bytes()
        target.write_bytes(data[:len(data) // 2])
    elif kind == "renamed-pickle":
        torch.save({"state_dict": Unpickled(marker)}, str(target))
    elif kind == "wrong-kind":  # a valid file of another of the pack's kinds
        other = good["hspace_directions"] if folder != "hspace_directions" else good["invedit_classifiers"]
        shutil.copyfile(other, target)
    elif kind == "wrong-shape":
        wrong_shape(src, target)
    elif kind in METADATA_EDITS:
        edit_metadata(src, target, METADATA_EDITS[kind][folder])
    return dst


def _more(key, by=1):
    return lambda meta: {key: str(int(meta[key]) + by)}


def _one_more_class(meta):
    return {"classes": json.dumps(json.loads(meta["classes"]) + ["extra"])}


# kind -> folder -> f(metadata) -> the fields to overwrite: the tensors unchanged, the metadata disagreeing with them
# ("metadata-disagrees": a count or shape one off) or not parsing ("metadata-garbled"); a CLIP folder's metadata is
# its config.json. The aesthetic heads carry no metadata: nothing to disagree with.
METADATA_EDITS = {
    "metadata-disagrees": {"invedit_value_embeds": _more("steps"), "hspace_directions": _more("channels"),
                           "embeddings": _more("n_tokens"), "invedit_classifiers": _one_more_class,
                           "invedit_clip": _more("projection_dim")},
    "metadata-garbled": {"invedit_value_embeds": lambda m: {"guidance": "abc"},
                         "hspace_directions": lambda m: {"h_hw": "abc"},
                         "embeddings": lambda m: {"class_index": "abc"},
                         "invedit_classifiers": lambda m: {"classes": "abc"},
                         "invedit_clip": lambda m: {"projection_dim": "abc"}},
}


def edit_metadata(src: Path, dst: Path, edit) -> None:
    """``src`` with ``edit(metadata)`` written over its metadata (for a CLIP folder's model.safetensors: over the
    folder's config.json)."""
    if dst.name == "model.safetensors":
        config = dst.parent / "config.json"
        cfg = json.loads(config.read_text())
        cfg.update({k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in edit(
            {k: str(v) for k, v in cfg.items()}).items()})
        config.write_text(json.dumps(cfg))
        return
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(edit(meta))
    save_file(tensors, str(dst), metadata=meta)


FILE_CASES = ("missing", "truncated", "renamed-pickle", "wrong-kind", "wrong-shape", *METADATA_EDITS)


def outcome(server, info: dict, prompt: dict, target: str, name: str, probe: str) -> str | None:
    """None when the prompt was refused as it should be (HTTP 400 naming the input, or an execution error of the
    node naming it, the probe entry and a fix), else what went wrong."""
    node_type = prompt[target]["class_type"]
    try:
        pid = server.queue(prompt)
    except ServerError as e:
        errors = e.body.get("node_errors", {}).get(target, {}) if isinstance(e.body, dict) else {}
        if e.status == 400 and names_input(errors.get("errors", []), name):
            return None
        return f"HTTP {e.status}: {json.dumps(e.body)[:400]}"
    try:
        server.wait(pid, timeout=300)
        return "accepted and ran"
    except PromptFailed as e:
        msg = next((m for m in e.messages if m.get("node_type") == node_type), None)
        if msg is None:
            return f"failed elsewhere: {json.dumps(e.messages)[:400]}"
        text = msg.get("exception_message", "")
        missing = [w for w, ok in (("the node", info[node_type]["display_name"] in text),
                                   ("the file", probe in text), ("a fix", FIX.search(text) is not None)) if not ok]
        return f"message lacks {', '.join(missing)}: {text[:400]}" if missing else None


def test_every_broken_file_of_every_file_input_is_refused_by_name(server, probe_files, capsys):
    good, marker = probe_files
    inputs = file_inputs(server)
    # every file list of the pack is found (classifier, aesthetic head, direction, and the CLIP inputs)
    assert set(inputs.values()) == set(PACK_FOLDERS), inputs
    before = snapshot(BASE, server.output_path)
    info = server.object_info()
    tried, failures = collections.Counter(), []
    for (node_type, name), folder in sorted(inputs.items()):
        for kind in FILE_CASES:
            if kind in METADATA_EDITS and folder not in METADATA_EDITS[kind]:
                continue
            entry = make_case(kind, folder, good, marker)
            try:
                info = server.object_info()  # the entry is listed now (as a user sees it in the dropdown)
                assert entry.name in json.dumps(info[node_type]["input"]["required"][name])
                if kind == "missing":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                # the node's other file inputs at their good entries
                fixed = {n: good[f].name for (t, n), f in inputs.items() if t == node_type and n != name}
                fixed[name] = entry.name
                b = Builder(info)
                target = b.node(node_type, fixed)
                b.prompt[str(len(b.prompt) + 1)] = {"class_type": "PreviewAny", "inputs": {"source": [target, 0]}}
                why = outcome(server, info, b.prompt, target, name, entry.name.removesuffix(".safetensors"))
                if why:
                    failures.append(f"{node_type}.{name} at a {kind} entry: {why}")
            finally:
                if entry.exists():
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            tried[node_type, f"file: {kind}"] += 1
    with capsys.disabled():
        print_table("misuse probes, file inputs", tried)
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "a pickle was unpickled"
    after = snapshot(BASE, server.output_path)
    assert set(after) == set(before), set(after) ^ set(before)
    assert {p: v for p, v in after.items() if before[p] != v} == {}
    prompt, _ = valid_graph(info, "InvEditEDICTSigmas")
    assert server.wait(server.queue(prompt), timeout=120)["status"]["status_str"] == "success"


# -- save names ----------------------------------------------------------------------------------------------------

# kind -> (names, what the refusal must say)
SAVE_NAMES = {
    "traversal": (["../probe_trav", "../../probe_trav", "sub/probe_trav", "..\\probe_trav", ".."], "folder parts"),
    "absolute": (["/tmp/probe_abs", "C:\\probe_abs"], "folder parts"),
    "overlong": (["p" * 200], "too long"),
    "non-ASCII": (["方向", "évil"], "non-ASCII"),
    "empty": (["", "   "], "empty"),
    "odd characters": ([".probe_hidden", "probe\u0000nul", "probe*?"], "not allowed"),
}


SAVES_TO = {"InvEditHSpaceSave": "hspace_directions", "InvEditValueSave": "invedit_value_embeds",
            "InvEditCASOSave": "embeddings"}


def save_inputs(info: dict) -> list:
    """(node type, input) of every STRING input of a pack output node: the names of the files the pack writes."""
    return [(t, n) for t in pack_node_ids() if info[t].get("output_node")
            for n, (kind, *_) in info[t]["input"].get("required", {}).items() if kind == "STRING"]


def test_every_hostile_save_name_is_refused_and_nothing_is_written_or_overwritten(server, probe_files, capsys):
    good, _ = probe_files
    info = server.object_info()
    targets = save_inputs(info)
    assert {t for t, _ in targets} == set(SAVES_TO), targets  # every save node, and where it writes
    pack_dirs = [MODELS / f for f in PACK_FOLDERS]
    before = snapshot(BASE, server.output_path)
    kept = {p: digest(p) for d in pack_dirs for p in d.rglob("*") if p.is_file()}
    tried, failures = collections.Counter(), []
    for node_type, name in targets:
        who = info[node_type]["display_name"]
        for kind, (values, problem) in SAVE_NAMES.items():
            for value in values:
                b = Builder(info)
                target = b.node(node_type, {name: value})
                try:
                    server.wait(server.queue(b.prompt), timeout=300)
                    failures.append(f"{node_type}.{name} = {value!r} ({kind}) was saved")
                except ServerError as e:
                    errors = e.body.get("node_errors", {}).get(target, {}) if isinstance(e.body, dict) else {}
                    if e.status != 400 or not names_input(errors.get("errors", []), name):
                        failures.append(f"{node_type}.{name} = {value!r}: HTTP {e.status} {json.dumps(e.body)[:300]}")
                except PromptFailed as e:
                    text = " ".join(m.get("exception_message", "") for m in e.messages)
                    if who not in text or problem not in text or not FIX.search(text):
                        failures.append(f"{node_type}.{name} = {value!r} ({kind}): {text[:300]}")
                tried[node_type, f"save name: {kind}"] += 1
        # the name of a file that exists: saved beside it under ComfyUI's counter, the first one untouched (CASO
        # saves a file per class: <prefix>_<class>, each beside its own)
        existing = good[SAVES_TO[node_type]]
        base = existing.stem.removesuffix("_red") if node_type == "InvEditCASOSave" else existing.stem
        b = Builder(info)
        b.node(node_type, {name: base})
        server.wait(server.queue(b.prompt), timeout=300)
        assert (existing.parent / f"{existing.stem}_00001.safetensors").is_file()
        tried[node_type, "save name: an existing file's"] += 1
    with capsys.disabled():
        print_table("misuse probes, save names", tried)
    assert not failures, "\n".join(failures)
    after = snapshot(BASE, server.output_path)
    new = set(after) - set(before)
    assert {p for p in new if not any(d in p.parents for d in pack_dirs)} == set(), new  # nothing outside the folders
    expected = {p.parent / f"{p.stem}_00001.safetensors" for f in SAVES_TO.values()
                for p in good[f].parent.glob(good[f].stem.removesuffix("_red") + "*.safetensors") if p in before}
    assert new == expected, new ^ expected
    assert not list(Path("/tmp").glob("probe_abs*"))
    assert {p: digest(p) for p in kept} == kept  # nothing overwritten
    assert not [p for d in pack_dirs for p in d.rglob("*.tmp")]  # nothing half-written
    assert set(before) <= set(after)


# -- interrupts and patch leaks ------------------------------------------------------------------------------------

# node -> inputs that make it run long enough to be interrupted in the middle
LONG = {
    "InvEditDOODLOptimize": {"iterations": 1000, "steps": 50},
    "InvEditHSpaceTrainDirection": {"epochs": 100, "init": "random"},
    "InvEditEDICTInvert": {"sigmas": ("InvEditEDICTSigmas", {"steps": 250})},  # within p 0.93's 253 (issue 30)
    "InvEditStyleDiffusionInvert": {"steps": 50, "inner_steps": 200},
    "InvEditCASOTrain": {"steps": 10000},
}


def reference_graphs(info: dict) -> dict:
    """A stock text-to-image workflow and two pack ones (an h-space direction under the stock KSampler, EDICT
    sampling through SamplerCustomAdvanced), each saving its image."""
    def finish(b, latent, prefix):
        vae = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
        dec = b.node("VAEDecode", {"samples": [latent, 0], "vae": [vae, 2]})
        b.node("SaveImage", {"images": [dec, 0], "filename_prefix": prefix})
        return b.prompt

    def ksampler(model):
        b = Builder(info)
        ck = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
        pos = b.node("CLIPTextEncode", {"clip": [ck, 1], "text": "a red circle"})
        neg = b.node("CLIPTextEncode", {"clip": [ck, 1], "text": ""})
        if model is None:
            m = [ck, 0]
        else:  # red -> blue, applied in the symmetric mode the stock KSampler reaches
            blue = b.node("CLIPTextEncode", {"clip": [ck, 1], "text": "a blue circle"})
            d = b.node("InvEditHSpaceFromPrompts", {"model": [ck, 0], "source": [pos, 0], "target": [blue, 0],
                                                    "latent": [b.node("EmptyLatentImage", SMALL), 0], "steps": 4})
            m = [b.node("InvEditHSpaceApply", {"model": [ck, 0], "direction": [d, 0], "mode": "symmetric"}), 0]
        k = b.node("KSampler", {"model": m, "positive": [pos, 0], "negative": [neg, 0], "seed": 7, "steps": 4,
                                "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                "latent_image": [b.node("EmptyLatentImage", SMALL), 0]})
        return b, k

    b, k = ksampler(None)
    stock = finish(b, k, "stock")
    b, k = ksampler("hspace")
    hspace = finish(b, k, "hspace")
    b = Builder(info)
    ck = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
    guider = b.node("CFGGuider", {"model": [ck, 0], "cfg": 3.0})
    out = b.node("SamplerCustomAdvanced", {
        "noise": [b.node("RandomNoise", {"noise_seed": 7}), 0], "guider": [guider, 0],
        "sampler": [b.node("InvEditSamplerEDICT", {}), 0],
        "sigmas": [b.node("InvEditEDICTSigmas", {"model": [ck, 0], "steps": 4}), 0],
        "latent_image": [b.node("EmptyLatentImage", SMALL), 0]})
    return {"stock": stock, "hspace": hspace, "edict": finish(b, out, "edict")}


def saved_pixels(srv, entry: dict):
    import numpy as np
    from PIL import Image
    images = [i for o in entry["outputs"].values() for i in o.get("images", []) if i["type"] == "output"]
    assert len(images) == 1, entry["outputs"]
    return np.asarray(Image.open(srv.output_path / images[0]["subfolder"] / images[0]["filename"]))


def test_interrupts_and_pack_runs_leave_later_runs_identical_to_a_fresh_server(server, tmp_path, capsys):
    import time
    import numpy as np
    info = server.object_info()
    tried = collections.Counter()
    for node_type, fixed in LONG.items():
        b = Builder(info)
        fixed = {k: ([b.node(*v), 0] if isinstance(v, tuple) else v) for k, v in fixed.items()}
        target = b.node(node_type, fixed)
        b.prompt[str(len(b.prompt) + 1)] = {"class_type": "PreviewAny", "inputs": {"source": [target, 0]}}
        pid = server.queue(b.prompt)
        deadline = time.time() + 120
        while not any(pid in json.dumps(q) for q in server.get("/queue")["queue_running"]):
            assert time.time() < deadline, "the prompt never started"
            time.sleep(0.1)
        time.sleep(3.0)  # well inside the long node
        server.post("/interrupt", {"prompt_id": pid})
        with pytest.raises(PromptFailed) as e:
            server.wait(pid, timeout=120)
        assert e.value.interrupted, e.value.messages
        tried[node_type, "interrupted mid-run"] += 1
    with capsys.disabled():
        print_table("misuse probes, interrupts", tried)
    refs = reference_graphs(info)
    here = {k: saved_pixels(server, server.wait(server.queue(g), timeout=300)) for k, g in refs.items()}
    out = tmp_path / "fresh-output"
    with ComfyServer(output_dir=out) as fresh:
        fresh.output_path = out
        there = {k: saved_pixels(fresh, fresh.wait(fresh.queue(g), timeout=300)) for k, g in refs.items()}
    for k in refs:
        assert np.array_equal(here[k], there[k]), f"{k}: differs from a fresh server"
    # the pack's h-space graph really changes the image (the comparison would not see a leak otherwise)
    assert not np.array_equal(here["stock"], here["hspace"])


# -- cross-node cases (issue 29): the other world's model, text or latent; another model of the family for an
# artifact; embedding: names in every prompt input ---------------------------------------------------------------

from harness.examples import SD3_CKPT  # noqa: E402

WORLD_TYPES = ("CLIP", "CONDITIONING", "LATENT", "VAE")
# artifacts that must be replayed on the model that made them: (input type or name) -> (provider node, output, inputs)
ARTIFACT_PROVIDERS = {
    "INVEDIT_VALUE_EMBED": PROVIDERS["INVEDIT_VALUE_EMBED"],
    "INVEDIT_HSPACE_DIRECTION": PROVIDERS["INVEDIT_HSPACE_DIRECTION"],
    "pair": None,   # EDICT / BDIA Regenerate: the Invert node of the same method
}
PAIR_INPUTS = {("InvEditDOODLOptimize", "latent"): "InvEditEDICTInvert"}   # a LATENT input that takes a pair
# the nodes that replay an exact inversion (refused on another sampling; a direction only warns, Value Embedding
# Sigmas only reads the embedding's grid)
EXACT_REPLAY = {"InvEditEDICTRegenerate", "InvEditBDIARegenerate", "InvEditDOODLOptimize", "InvEditValueApply",
                "InvEditP2PEdit"}
PROMPT_INPUT = re.compile(r"prompt|text|^find$|^replace$|^target_override$")
# nodes whose prompts go to a ComfyUI CLIP (which reads embedding:<name>): an existing file must run
READS_EMBEDDINGS = {"InvEditP2PEdit", "InvEditEMSEncodeEditPrompts"}
# inputs the embedding probes give so that the node runs its prompts (a type: from PROVIDERS) and runs briefly
PROMPT_NODE_INPUTS = {"InvEditP2PEdit": {"latent": "LATENT", "sigmas": "SIGMAS"},
                      "InvEditHSpaceTrainDirection": {"steps": 4, "t_edit": 500, "epochs": 1, "batch_size": 1,
                                                      "init": "random"}}


def other_world(b: Builder, kinds) -> dict:
    """Inputs of ``kinds`` from the SD3 world: its checkpoint's MODEL / CLIP / VAE, its CLIP's CONDITIONING and its
    VAE's encoding of an image (a LATENT with content: an empty one is given the model's channels by ComfyUI)."""
    ck = b.node("CheckpointLoaderSimple", {"ckpt_name": SD3_CKPT})
    out = {"MODEL": [ck, 0], "CLIP": [ck, 1], "VAE": [ck, 2]}
    out["CONDITIONING"] = [b.node("CLIPTextEncode", {"clip": [ck, 1], "text": "a red circle"}), 0]
    image = b.node("EmptyImage", {"width": 64, "height": 64, "batch_size": 1, "color": 0x8040c0})
    out["LATENT"] = [b.node("VAEEncode", {"pixels": [image, 0], "vae": [ck, 2]}), 0]
    return {k: v for k, v in out.items() if k in kinds}


def input_types(info: dict, node_type: str) -> dict:
    return {name: kind for name, (kind, *_) in info[node_type]["input"].get("required", {}).items()
            if isinstance(kind, str)}


def cross_case_graph(info: dict, node_type: str, case: str) -> tuple[dict, str] | None:
    """The node's valid graph with one kind of input from elsewhere (None where the case does not apply):
    "other world's model": its MODEL from the SD3 world, the rest from the shapes world;
    "other world's text and latent": its CLIP, CONDITIONING, LATENT and VAE from the SD3 world;
    "another model of the family": its artifact (value embedding, h-space direction, EDICT / BDIA pair) made with the
    shapes-world model, the node given that model patched to v-prediction (ModelSamplingDiscrete)."""
    types = input_types(info, node_type)
    if "MODEL" not in types.values():
        return None
    b = Builder(info)
    fixed = {}
    if case == "other world's model":
        if not set(types.values()) & {"CONDITIONING", "LATENT", "CLIP", *ARTIFACT_PROVIDERS}:
            return None
        fixed.update({n: v for n, v in ((n, other_world(b, ("MODEL",))["MODEL"]) for n, k in types.items()
                                        if k == "MODEL")})
    elif case == "other world's text and latent":
        world = other_world(b, WORLD_TYPES)
        fixed.update({n: world[k] for n, k in types.items() if k in WORLD_TYPES})
        if not fixed:
            return None
    else:
        optional = {n: k for n, (k, *_) in info[node_type]["input"].get("optional", {}).items()
                    if isinstance(k, str) and k in ARTIFACT_PROVIDERS}
        types = {**types, **optional}
        artifacts = [n for n, k in types.items() if k in ARTIFACT_PROVIDERS or n in ARTIFACT_PROVIDERS
                     or (node_type, n) in PAIR_INPUTS]
        if not artifacts:
            return None
        ck = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
        vpred = b.node("ModelSamplingDiscrete", {"model": [ck, 0], "sampling": "v_prediction", "zsnr": False})
        fixed.update({n: [vpred, 0] for n, k in types.items() if k == "MODEL"})
        for n in artifacts:
            if n == "pair" or (node_type, n) in PAIR_INPUTS:
                invert = PAIR_INPUTS.get((node_type, n), node_type.replace("Regenerate", "Invert"))
                fixed[n] = [b.node(invert), 0]
            else:
                provider, index, given = ARTIFACT_PROVIDERS[types[n]]
                fixed[n] = [b.node(provider, given or None), index]
    return with_preview(b, info, b.node(node_type, fixed))


def refused_or_ran(server, info: dict, prompt: dict, target: str) -> tuple[str, str | None, str]:
    """("refused", None, message) for an HTTP 400 or an execution error of the node naming it and a fix; ("ran",
    None, "") when the prompt ran; else (what happened, why it is wrong, message)."""
    node_type = prompt[target]["class_type"]
    try:
        pid = server.queue(prompt)
    except ServerError as e:
        body = json.dumps(e.body)[:400]
        return ("refused", None, body) if e.status == 400 else ("error", f"HTTP {e.status}: {body}", body)
    try:
        server.wait(pid, timeout=300)
        return "ran", None, ""
    except PromptFailed as e:
        msg = next((m for m in e.messages if m.get("node_type") == node_type), None)
        if msg is None:
            return "error", f"failed elsewhere: {json.dumps(e.messages)[:400]}", ""
        text = msg.get("exception_message", "")
        missing = [w for w, ok in (("the node", info[node_type]["display_name"] in text),
                                   ("a fix", FIX.search(text) is not None)) if not ok]
        return (("refused", None, text) if not missing else
                ("error", f"message lacks {', '.join(missing)}: {text[:400]}", text))


CROSS_CASES = ("other world's model", "other world's text and latent", "another model of the family")


def test_cross_family_and_cross_model_inputs_are_refused_by_name_or_run(server, probe_files, capsys):
    """Every pack node that takes a MODEL, fed the other world's model, the other world's text and latents, or an
    artifact made with another model of the family: refused naming the node and the fix, or run. Where the answer
    is known it is required: a node with a MODEL and a CONDITIONING (or a CLIP) of another family refuses (the
    conditioning check), and an exact-replay artifact (value embedding, EDICT / BDIA pair) on another sampling
    refuses (the model fingerprint)."""
    info = server.object_info()
    tried, failures = collections.Counter(), []
    for node_type in pack_node_ids():
        types = input_types(info, node_type)
        for case in CROSS_CASES:
            built = cross_case_graph(info, node_type, case)
            if built is None:
                continue
            prompt, target = built
            result, why, _ = refused_or_ran(server, info, prompt, target)
            tried[node_type, f"{case}: {result}"] += 1
            if why:
                failures.append(f"{node_type}, {case}: {why}")
            must_refuse = ((case != "another model of the family" and "MODEL" in types.values()
                            and {"CONDITIONING", "CLIP"} & set(types.values()))
                           or (case == "another model of the family" and node_type in EXACT_REPLAY))
            if must_refuse and result == "ran":
                failures.append(f"{node_type}, {case}: ran, but it must refuse")
    with capsys.disabled():
        print_table("misuse probes, cross-family and cross-model", tried)
    assert not failures, "\n".join(failures)
    assert sum(tried.values()) >= 40, tried


def test_embedding_names_in_every_prompt_input_are_read_or_refused_by_name(server, probe_files, capsys):
    """Every prompt input of every pack node with ``embedding:`` names: a file that exists (a CASO class the probes
    saved) runs; a name with no file, and a path, are refused naming the node and the fix, or run where the node's
    text goes to a CLIP that reads embeddings as ComfyUI does (then ComfyUI's own log says it)."""
    good, _ = probe_files
    info = server.object_info()
    tried, failures = collections.Counter(), []
    names = {"file": "embedding:" + good["embeddings"].stem, "no file": "embedding:probe_no_such_embedding",
             "a path": "embedding:../checkpoints/probe"}
    for node_type in pack_node_ids():
        spec = info[node_type]["input"].get("required", {})
        for name, (kind, *_) in spec.items():
            if kind != "STRING" or not PROMPT_INPUT.search(name):
                continue
            for label, word in names.items():
                b = Builder(info)
                extra = {k: ([b.node(*PROVIDERS[v][::2]), PROVIDERS[v][1]] if v in PROVIDERS else v)
                         for k, v in PROMPT_NODE_INPUTS.get(node_type, {}).items()}
                prompt, target = with_preview(b, info, b.node(node_type, extra))
                text = prompt[target]["inputs"][name] or "a circle"
                # the word in place of the last (P2P's replace edits swap words one for one; lines kept)
                head, space, _ = text.rpartition(" ")
                prompt[target]["inputs"][name] = f"{head} {word}" if space else f"a {word}"
                result, why, text = refused_or_ran(server, info, prompt, target)
                tried[node_type, f"{name}, embedding with {label}: {result}"] += 1
                if why:
                    failures.append(f"{node_type}.{name} with {label}: {why}")
                elif label == "file" and result != "ran" and node_type in READS_EMBEDDINGS:
                    failures.append(f"{node_type}.{name}: refused an embedding that exists: {text[:400]}")
    with capsys.disabled():
        print_table("misuse probes, embedding: names in prompt inputs", tried)
    assert not failures, "\n".join(failures)
    assert sum(tried.values()) >= 20, tried


# -- long and chained workflows (issue 30) ------------------------------------------------------------------------

def test_long_and_chained_workflow_mistakes_are_refused_up_front(server, probe_files, capsys):
    """An EDICT inversion too long for its mix_p (refused before its first step, not NaN after minutes); a CASO save
    whose last class's file name is too long (no file of the set written); SD3 latents with the SD1.5 VAE in the
    Reconstruction Report; DDIM noise inverted along another schedule than the value embedding's grid in P2P Edit.
    Each is refused naming the node and the fix, fast, and writes nothing."""
    import time
    info = server.object_info()
    tried, failures = collections.Counter(), []
    before = snapshot(BASE / "models")

    def case(label, build, node_type, says, budget=60.0):
        b = Builder(info)
        prompt, target = with_preview(b, info, build(b))
        t = time.time()
        result, why, text = refused_or_ran(server, info, prompt, target)
        took = time.time() - t
        tried[node_type, f"{label}: {result}"] += 1
        if why or result != "refused" or says not in text:
            failures.append(f"{label}: {why or result} (wanted {says!r}) {text[:300]}")
        elif took > budget:
            failures.append(f"{label}: refused only after {took:.0f} s")

    def long_edict(b):
        sig = b.node("InvEditEDICTSigmas", {"steps": 400})
        return b.node("InvEditEDICTInvert", {"sigmas": [sig, 0]})
    case("EDICT Invert, 400 steps at mix_p 0.93", long_edict, "InvEditEDICTInvert", "use at most 253 steps",
         budget=30.0)

    def long_caso(b):   # 115 characters: "<prefix>_red" fits 120, "<prefix>_green" does not
        return b.node("InvEditCASOSave", {"filename_prefix": PROBE + "p" * (115 - len(PROBE))})
    case("CASO Save, a prefix the later classes' names outgrow", long_caso, "InvEditCASOSave", "nothing was saved")

    def sd3_report(b):
        sd3 = other_world(b, ("LATENT",))["LATENT"]
        vae = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
        image = b.node("EmptyImage", {"width": 64, "height": 64, "batch_size": 1, "color": 0})
        return b.node("InvEditReconstructionReport", {"original": sd3, "reconstruction": sd3, "vae": [vae, 2],
                                                      "source_image": [image, 0]})
    case("Reconstruction Report, SD3 latents and the SD1.5 VAE", sd3_report, "InvEditReconstructionReport",
         "the VAE decodes 4-channel latents")

    def p2p_other_schedule(b):
        ck = b.node("CheckpointLoaderSimple", {"ckpt_name": CKPT})
        sig = b.node("BasicScheduler", {"model": [ck, 0], "scheduler": "normal", "steps": 3, "denoise": 1.0})
        noise = b.node("InvEditDDIMInvert", {"sigmas": [sig, 0], "cfg": 1.0})
        emb = b.node(*PROVIDERS["INVEDIT_VALUE_EMBED"][::2])
        return b.node("InvEditP2PEdit", {"value_embed": [emb, 0], "latent": [noise, 0]})
    case("P2P Edit, DDIM noise inverted along another schedule than the embedding's", p2p_other_schedule,
         "InvEditP2PEdit", "invert along Value Embedding Sigmas", budget=120.0)
    with capsys.disabled():
        print_table("misuse probes, long and chained workflows", tried)
    assert not failures, "\n".join(failures)
    after = snapshot(BASE / "models")
    assert set(after) == set(before), set(after) ^ set(before)
