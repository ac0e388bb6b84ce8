"""Every model folder the pack registers with ComfyUI's ``folder_paths`` (extra_model_paths.yaml can add paths), and
the lookups of names in them. A renamed folder keeps its old path as a second path of the new name, so files users
put there before still appear in the combos."""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

CLIP_FOLDER = "invedit_clip"              # models/invedit_clip/<name>/: transformers CLIP folders for the CLIP losses
HSPACE_FOLDER = "hspace_directions"       # h-space direction files
CLASSIFIER_FOLDER = "invedit_classifiers"  # image classifiers for the pixel losses (was models/classifiers/)
AESTHETIC_FOLDER = "invedit_aesthetic"    # linear aesthetic heads (was models/aesthetic/)
VALUE_FOLDER = "invedit_value_embeds"      # StyleDiffusion / null-text inversions of images
LEGACY = {CLASSIFIER_FOLDER: "classifiers", AESTHETIC_FOLDER: "aesthetic"}


def register(name: str, extensions: set) -> None:
    """models/<name>/ (and the folder's former name, read-only in practice) as a ComfyUI model folder."""
    if name not in folder_paths.folder_names_and_paths:
        paths = [os.path.join(folder_paths.models_dir, name)]
        if name in LEGACY:
            paths.append(os.path.join(folder_paths.models_dir, LEGACY[name]))
        folder_paths.folder_names_and_paths[name] = (paths, extensions)


register(CLIP_FOLDER, set())
register(HSPACE_FOLDER, {".safetensors"})
register(CLASSIFIER_FOLDER, {".safetensors"})
register(AESTHETIC_FOLDER, {".safetensors"})
register(VALUE_FOLDER, {".safetensors"})


def file_names(folder: str) -> list[str]:
    return folder_paths.get_filename_list(folder)


def file_path(folder: str, name: str) -> Path:
    return Path(folder_paths.get_full_path_or_raise(folder, name))


def save_dir(folder: str) -> Path:
    """Where the pack writes new files of ``folder`` (its first path)."""
    return Path(folder_paths.get_folder_paths(folder)[0])


def save_new(folder: str, kind: str, name: str, tensors: dict, meta: dict, who: str) -> Path:
    """Save a file of ``kind`` (``artifacts``) under the safe form of ``name`` in ``folder``'s first path, atomically
    and beside an existing file of that name (ComfyUI's counter), never over it; an unsafe name is refused saying why."""
    from .. import artifacts
    try:
        file_name = artifacts.safe_file_name(name, who)
    except artifacts.ArtifactError as e:
        raise ValueError(str(e)) from None
    return artifacts.save(artifacts.free_path(save_dir(folder), file_name), kind, tensors, meta)


def save_set(folder: str, kind: str, items: list, who: str) -> list[Path]:
    """Save several files (``items``: (name, tensors, meta, what) with ``what`` naming the item in a refusal) all or
    nothing: every name is checked before the first file is written, and a failure while writing removes the files
    this call wrote."""
    from .. import artifacts
    names = []
    for name, _, _, what in items:
        try:
            names.append(artifacts.safe_file_name(name, who))
        except artifacts.ArtifactError as e:
            raise ValueError(f"{e} (the file of {what}); nothing was saved") from None
    written = []
    try:
        for file_name, (_, tensors, meta, _) in zip(names, items):
            written.append(artifacts.save(artifacts.free_path(save_dir(folder), file_name), kind, tensors, meta))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def clip_folder_names() -> list[str]:
    """The sub-folders of models/invedit_clip/ that hold a transformers CLIP (a config.json)."""
    names = set()
    for root in folder_paths.get_folder_paths(CLIP_FOLDER):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def clip_folder(name: str, who: str) -> Path:
    """The path of CLIP folder ``name`` (one of ``clip_folder_names()``; nothing else, so no path tricks)."""
    if name not in clip_folder_names():
        raise ValueError(f"{who}: no CLIP folder {name!r} in models/{CLIP_FOLDER}/; put a transformers CLIPModel "
                         f"folder (config.json, model.safetensors, tokenizer files) there and refresh")
    for root in folder_paths.get_folder_paths(CLIP_FOLDER):
        if os.path.isfile(os.path.join(root, name, "config.json")):
            return Path(root) / name
    raise AssertionError(name)
