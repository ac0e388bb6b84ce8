"""CASO on ComfyUI models (``optim.caso``): a class embedding as the stock CLIP's tokens, encoded the way
CLIPTextEncode encodes the prompt ``embedding:<class file>`` (so the pack's conditioning and the stock one are the
same tensors), and differentiably for training (``adapters.clip.differentiable_text_encoder``). Training, guidance and
editing nodes follow (issue 14)."""
from __future__ import annotations

import torch

ENCODER_OF = {"l": "clip_l", "g": "clip_g"}  # ComfyUI tokenizer key -> the embedding file's tensor key


def class_tokens(clip, embedding: dict, who: str) -> dict:
    """The tokens of ``embedding:<file>`` built in memory: per text encoder, [BOS, the class's n rows, EOS, pad…]
    (77 entries, as the stock tokenizer writes them). ``embedding``: {"clip_l": [n, 768], ("clip_g": [n, 1280])}; the
    rows may carry gradients."""
    base = clip.tokenize("")
    out = {}
    for key, chunks in base.items():
        name = ENCODER_OF.get(key, key)
        if name not in embedding:
            raise ValueError(f"{who}: this CLIP has a {name} text encoder and the embedding has {sorted(embedding)}; "
                             f"use an embedding trained with this model's CLIP")
        e = embedding[name]
        width = getattr(getattr(clip.tokenizer, name, None), "embedding_size", e.shape[-1])
        if e.ndim != 2 or e.shape[-1] != width:
            raise ValueError(f"{who}: the embedding's {name} tensor is {tuple(e.shape)}, this CLIP's {name} takes "
                             f"[n, {width}]; use an embedding trained with this model's CLIP")
        chunk = chunks[0]
        rows = [(e[i], 1.0) for i in range(e.shape[0])]
        if len(rows) > len(chunk) - 2:
            raise ValueError(f"{who}: {len(rows)} embedding rows do not fit one {len(chunk)}-token chunk")
        out[key] = [[chunk[0], *rows, *chunk[1:len(chunk) - len(rows)]]]
    return out


def encode_class(clip, embedding: dict, who: str):
    """The CONDITIONING of a class embedding: what CLIPTextEncode gives for ``embedding:<its file>``."""
    return clip.encode_from_tokens_scheduled(class_tokens(clip, embedding, who))


def class_cond_tensor(clip, embedding: dict, who: str) -> torch.Tensor:
    """The cross-attention tensor [1, 77, D] of a class embedding, differentiable in it (call inside
    ``differentiable_text_encoder``)."""
    return clip.encode_from_tokens(class_tokens(clip, embedding, who), return_pooled=True, return_dict=True)["cond"]
