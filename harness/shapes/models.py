"""The shapes world's judges: attribute classifiers (small CNNs) and a toy CLIP (transformers CLIPModel with its
own tiny BPE vocabulary), plus their loaders. Pure torch + transformers."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import pure_pack
from . import data

pure_pack()
from invedit.losses.classifiers import SmallCNN  # noqa: E402

ATTRIBUTES = {"colour": data.COLOURS, "shape": data.SHAPES}


# The shapes world's attribute classifiers are the pack's small_cnn (losses/classifiers.py), so that users' DOODL
# classifier losses load them like any other classifier file.
AttributeClassifier = SmallCNN


def load_classifier(path: str | Path) -> tuple[AttributeClassifier, list[str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    classes = json.loads(meta["classes"])
    m = AttributeClassifier(len(classes), int(meta.get("width", 32)))
    m.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return m.eval(), classes


# --- toy CLIP ----------------------------------------------------------------------------------------------------

TOY_WORDS = ["a", "an", "the", "photo", "picture", "of", "shape", "object", "image", "and", "on", "background",
             *data.COLOURS, *data.SHAPES]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _bpe(word: str, merges: list[str]) -> list[str]:
    """The parts byte-level BPE leaves of ``word`` with these merges (lowest rank first, as CLIPTokenizer)."""
    rank = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        r, i = min(pairs)
        if r == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def toy_tokenizer_files(words=None) -> tuple[dict, list[str]]:
    """vocab.json and merges.txt of a tiny byte-level BPE for transformers' CLIPTokenizer: every letter (alone and
    word-final) and the world's words (``words``, the shapes world's by default) whole; anything else spells out
    letter by letter."""
    vocab: dict[str, int] = {}

    def add(tok):
        vocab.setdefault(tok, len(vocab))
    for c in LETTERS + ".,!?'-0123456789":
        add(c)
        add(c + "</w>")
    merges: list[str] = []
    ordered = sorted(TOY_WORDS if words is None else words, key=lambda w: (-len(w), w))  # longest first
    for word in ordered:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            pair = f"{parts[0]} {parts[1]}"
            if pair not in merges:
                merges.append(pair)
            add(merged)
            parts = [merged] + parts[2:]
    # a word whose letters an earlier word's merges pair differently ("tr" of "triangle" inside "striped") would
    # stay split: add, at the lowest rank, the merges that BPE's own order needs to finish it, until every word is
    # one token (the shapes world's words need none, so its vocabulary is unchanged)
    for _ in range(10):
        broken = [w for w in ordered if len(_bpe(w, merges)) > 1]
        if not broken:
            break
        for word in broken:
            parts = _bpe(word, merges)
            while len(parts) > 1:
                merges.append(f"{parts[0]} {parts[1]}")
                add(parts[0] + parts[1])
                parts = _bpe(word, merges)
    add("<|startoftext|>")
    add("<|endoftext|>")
    return vocab, merges


def toy_clip_config():
    from transformers import CLIPConfig
    vocab, _ = toy_tokenizer_files()
    return CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=data.SIZE, patch_size=8, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=4, num_attention_heads=4),
        projection_dim=64)


def write_tokenizer(folder: Path, words=None, max_length: int = 16) -> None:
    vocab, merges = toy_tokenizer_files(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(str(folder))


def write_processor(folder: Path, size: int = data.SIZE) -> None:
    from transformers import CLIPImageProcessor
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                       image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(str(folder))


def load_toy_clip(folder: str | Path):
    """(CLIPModel, CLIPTokenizer) from a local folder, the way a user's CLIP loads (no hub access)."""
    from transformers import CLIPModel, CLIPTokenizer
    return (CLIPModel.from_pretrained(str(folder), local_files_only=True).eval(),
            CLIPTokenizer.from_pretrained(str(folder), local_files_only=True))


def clip_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, 64, 64] in [0, 1] -> the toy CLIP's normalised input (mean 0.5, std 0.5; differentiable)."""
    return images * 2 - 1
