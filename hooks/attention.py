"""Attention hooks: capture and edit the attention of ComfyUI's transformer blocks through ``transformer_options``
patches, for the methods that work on attention (StyleDiffusion's value input and map loss, null-text inversion,
prompt-to-prompt / P2Plus, LocalBlend). Pure torch; ComfyUI's fused attention is handed in by the adapter for the
layers left alone.

ComfyUI's protocol (comfy/ldm/modules/attention.py, BasicTransformerBlock.forward, 0.3.75):

- an ``attn2_patch`` ``fn(n, context, value, extra_options) -> (n, context, value)`` runs before cross-attention; the
  keys are projected from ``context``, the values from ``value`` (``value`` starts as ``context``);
- an ``attn1`` / ``attn2`` replace ``fn(q, k, v, extra_options) -> out`` gets the projected q [B, N, h·d], k and
  v [B, M, h·d] and returns the attention output [B, N, h·d] (``to_out`` follows);
- ``extra_options`` carries ``n_heads``, ``dim_head``, ``attn_precision``, ``cond_or_uncond``, ``sigmas``,
  ``original_shape`` (the latent's [B, C, H, W]), ``block``, ``block_index``, ``sample_sigmas``.

Rows. A call's batch is ``len(cond_or_uncond)`` equal chunks, label 0 = cond, 1 = uncond, in any order ComfyUI uses
([0, 1], [1, 0], [0], [1]); within a chunk, row r is prompt row r (P2P: 0 = source, r ≥ 1 = targets). ``row_labels``
is the one place this is worked out.

Layers are chosen by their query grid relative to the latent, ``divisor`` = √(H·W / N) (1 = full resolution, 2 = half,
4 = quarter: 16×16 at 512 px for SD1.5), never by block ids: the same rule fits SD1.5, SDXL and any resolution.
Probabilities are materialised (fp32 softmax(q·kᵀ/√d), [B, heads, N, M]) only in layers some controller asks for;
the others keep the fused kernel, so full-resolution self-attention is never materialised.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..errors import quote

COND, UNCOND = 0, 1
SELF, CROSS = "self", "cross"


# -- rows, layers, steps ------------------------------------------------------------------------------------------

def row_labels(cond_or_uncond: Sequence[int] | None, batch: int) -> list[tuple[int, int]]:
    """(label, prompt row) of every row of a batched call: label 0 = cond, 1 = uncond (a call without
    ``cond_or_uncond`` is all cond); prompt row = the row's index within its chunk."""
    chunks = list(cond_or_uncond) if cond_or_uncond else [COND]
    if batch % len(chunks):
        raise ValueError(f"a batch of {batch} rows does not split into the {len(chunks)} chunks {chunks}")
    per = batch // len(chunks)
    return [(label, r) for label in chunks for r in range(per)]


def query_divisor(extra_options: dict, n_queries: int) -> int:
    """How many times smaller than the latent a layer's query grid is per side: √(H·W / N), rounded (1 when the latent
    size is unknown)."""
    shape = extra_options.get("original_shape")
    if not shape or len(shape) < 4:
        return 1
    return max(1, round(math.sqrt(shape[-2] * shape[-1] / max(1, n_queries))))


def nearest_step(sigma: float, grid: Tensor) -> int:
    """The index of the σ in ``grid`` nearest to ``sigma`` in log-σ (σ = 0 counts as the smallest positive σ)."""
    g = grid.double().clamp_min(1e-12).log()
    return int((g - math.log(max(float(sigma), 1e-12))).abs().argmin())


def grid_position(sigma: float, grid: Tensor, snap: float = 1e-4) -> float:
    """Where ``sigma`` falls on a descending ``grid`` as a fractional index, linear in log-σ between neighbours
    (clamped to the ends). Within ``snap`` of a step (a σ of the grid rounded to float32) it is that step exactly."""
    g = grid.double().clamp_min(1e-12).log().tolist()
    s = math.log(max(float(sigma), 1e-12))
    pos = float(len(g) - 1)
    if s >= g[0]:
        pos = 0.0
    else:
        for i in range(len(g) - 1):
            if g[i] >= s >= g[i + 1] and g[i] > g[i + 1]:
                pos = i + (g[i] - s) / (g[i] - g[i + 1])
                break
    near = round(pos)
    return float(near) if abs(pos - near) < snap else pos


STEP_MATCH = ("nearest", "interpolate")


def grid_stepper(grid: Tensor, match: str = "nearest") -> Callable[[dict], Optional[float]]:
    """extra_options -> the step of the call, matching its σ (``extra_options['sigmas']``) to ``grid``: the nearest
    step's index, or (``interpolate``) the fractional position between two steps (``baked`` / ``per_step`` then blend
    their values)."""
    if match not in STEP_MATCH:
        raise ValueError(f"step matching must be one of {STEP_MATCH}, got {match!r}")

    def step(extra_options: dict):
        s = extra_options.get("sigmas")
        if s is None:
            return None
        sigma = float(s.flatten()[0])
        return nearest_step(sigma, grid) if match == "nearest" else grid_position(sigma, grid)
    return step


# -- attention with explicit probabilities ------------------------------------------------------------------------

def _heads(x: Tensor, heads: int) -> Tensor:
    b, n, hd = x.shape
    return x.view(b, n, heads, hd // heads).transpose(1, 2)


def _wide(x: Tensor) -> Tensor:
    """fp32, or the tensor's own dtype when it is wider (float64 stays float64: the parity tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def attention_probs(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """softmax(q·kᵀ/√d) in fp32 (float64 for float64 inputs): [B, heads, N, M] from q [B, N, h·d], k [B, M, h·d]."""
    qh, kh = _heads(_wide(q), heads), _heads(_wide(k), heads)
    return torch.softmax(qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5, dim=-1)


def attend(probs: Tensor, v: Tensor, heads: int) -> Tensor:
    """probs [B, heads, N, M] · v [B, M, h·d] -> [B, N, h·d] in v's dtype."""
    out = probs @ _heads(v.to(probs.dtype), heads)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d).to(v.dtype)


def sdpa(q: Tensor, k: Tensor, v: Tensor, heads: int, **_) -> Tensor:
    """The fused fallback outside ComfyUI (torch's scaled_dot_product_attention), ComfyUI's signature."""
    out = torch.nn.functional.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads))
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


@dataclass
class Call:
    """What a controller knows of one attention call; a controller that changes the probabilities of a row adds it
    to ``changed`` (only those rows leave the fused kernel's output)."""
    kind: str                      # SELF or CROSS
    divisor: int                   # query grid = latent / divisor per side
    labels: list                   # (label, prompt row) per batch row
    step: Optional[int]            # the sampling step (None: unknown)
    layer: tuple                   # (block name, block number, transformer index): a key for stored maps
    changed: set = field(default_factory=set)

    def rows(self, label: int, row: Optional[int] = None) -> list[int]:
        """Batch indices of the rows with ``label`` (and prompt row ``row``)."""
        return [i for i, (lb, r) in enumerate(self.labels) if lb == label and (row is None or r == row)]


class Controller:
    """Base of what edits or records attention probabilities: ``wants`` says whether a call's probabilities are
    needed (else the fused kernel runs), ``labels`` which rows' (None: all); ``edit`` returns them, changed or not."""

    def wants(self, call: Call) -> bool:
        return False

    def labels(self, call: Call) -> Optional[set]:
        return None

    def edit(self, probs: Tensor, call: Call) -> Tensor:
        return probs


def replace_patch(kind: str, controllers: Sequence[Controller], step: Callable[[dict], Optional[int]],
                  fused: Callable = sdpa) -> Callable:
    """An attn1 (``kind`` = SELF) or attn2 (CROSS) replace function running ``controllers`` in order on the layers
    any of them wants. Every row comes from ``fused`` (ComfyUI's ``optimized_attention``), bit for bit as without the
    patch, except the rows a controller changed, which attend with their edited probabilities: recording maps
    changes nothing, and a P2P source row is the unpatched model's in any batch layout."""
    def fn(q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        heads = extra_options["n_heads"]
        block = extra_options.get("block") or ("?", 0)
        call = Call(kind, query_divisor(extra_options, q.shape[1]),
                    row_labels(extra_options.get("cond_or_uncond"), q.shape[0]), step(extra_options),
                    (block[0], block[1], extra_options.get("block_index", 0)))
        active = [c for c in controllers if c.wants(call)]
        out = fused(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                    transformer_options=extra_options)
        if not active:
            return out
        wanted = [c.labels(call) for c in active]
        if any(w is None for w in wanted):
            rows = list(range(q.shape[0]))
        else:  # only the rows of the labels asked for (P2P's cross-attention: the cond chunk)
            labels = set().union(*wanted)
            rows = [i for i, (lb, _) in enumerate(call.labels) if lb in labels]
        sub = dataclasses.replace(call, labels=[call.labels[i] for i in rows], changed=set())
        probs = attention_probs(q[rows], k[rows], heads)
        for c in active:
            probs = c.edit(probs, sub)
        if not sub.changed:
            return out
        changed = sorted(sub.changed)
        out = out.clone()
        out[[rows[i] for i in changed]] = attend(probs[changed], v[[rows[i] for i in changed]], heads).to(out.dtype)
        call.changed.update(rows[i] for i in changed)
        return out
    return fn


# -- recording ----------------------------------------------------------------------------------------------------

class CaptureMaps(Controller):
    """Records the cross-attention probabilities of the cond rows in the layers with ``divisor`` (StyleDiffusion's
    map loss: 4, the 16×16 layers at 512 px; LocalBlend likewise). ``maps[step]`` lists (layer, probs [rows, heads,
    N, M]) in call order. ``detach`` for targets (the inversion's maps); off keeps the graph (the trained maps).

    It is the channel between one node's sampler and its model, not configuration: the pack makes one per node run and
    installs it on a clone that node keeps to itself (``adapters.stylediffusion``: invert, P2P edit), so the
    sharing of patch objects between clones (ComfyUI ≥ 0.14) never lets two runs write into one; the patches on
    MODELs the pack hands out (value playback) hold no state."""

    def __init__(self, divisors: Sequence[int] = (4,), detach: bool = True, label: int = COND):
        self.divisors, self.detach, self.label = tuple(divisors), detach, label
        self.maps: dict = {}

    def wants(self, call: Call) -> bool:
        return call.kind == CROSS and call.divisor in self.divisors and bool(call.rows(self.label))

    def labels(self, call: Call) -> Optional[set]:
        return {self.label}

    def edit(self, probs: Tensor, call: Call) -> Tensor:
        p = probs[call.rows(self.label)]
        self.maps.setdefault(call.step, []).append((call.layer, p.detach() if self.detach else p))
        return probs

    def clear(self) -> None:
        self.maps.clear()


def map_loss(maps: list, targets: list) -> Tensor:
    """Σ over layers of MSE(ã, â): StyleDiffusion's L_att for one step (layers paired in call order)."""
    if len(maps) != len(targets):
        raise ValueError(f"{len(maps)} attention maps against {len(targets)} targets: the layers differ")
    return sum(torch.nn.functional.mse_loss(a, b.to(a)) for (_, a), (_, b) in zip(maps, targets))


# -- prompt-to-prompt ---------------------------------------------------------------------------------------------

BOS, EOS = ("<start of text>",), ("<end of text>",)  # the start and end tokens in an aligned sequence


@dataclass(frozen=True)
class PromptTokens:
    """Where a prompt's words sit in its token sequence: ``spans[k]`` = the token positions of word k (BOS at 0),
    ``eos`` = the position of the end token; ``words`` for messages; ``ids`` the tokens of the words in order (the
    tokenizer's ids, for Refine's alignment; empty: each token is known by its word and its place in the word)."""
    words: tuple
    spans: tuple
    eos: int
    ids: tuple = ()

    def sequence(self) -> list:
        """The token sequence BOS, the words' tokens, EOS, as the official code aligns it (``tokenizer.encode``):
        element k is the token at position k."""
        ids = list(self.ids) if self.ids else [(w, k) for w, span in zip(self.words, self.spans)
                                                for k in range(len(span))]
        if len(ids) != self.eos - 1:
            raise ValueError(f"{len(ids)} token ids for the {self.eos - 1} tokens of {' '.join(self.words)!r}")
        return [BOS, *ids, EOS]


def _word_weights(src_span: Sequence[int], tgt_span: Sequence[int], w: Tensor) -> None:
    """Source word -> target word: token for token when the counts agree, else every target token takes the mean of
    the source word's tokens."""
    if len(src_span) == len(tgt_span):
        for i, j in zip(src_span, tgt_span):
            w[i, j] = 1.0
    else:
        for j in tgt_span:
            for i in src_span:
                w[i, j] = 1.0 / len(src_span)


def _tail(src: PromptTokens, tgt: PromptTokens, w: Tensor) -> None:
    """BOS to BOS, and the end token and padding after it in order (clipped to the sequence)."""
    n = w.shape[0]
    w[0, 0] = 1.0
    for j in range(tgt.eos, w.shape[1]):
        w[min(src.eos + j - tgt.eos, n - 1), j] = 1.0


def replace_mapper(src: PromptTokens, tgt: PromptTokens, length: int) -> Tensor:
    """P2P Replace (a word swap): W [length, length] with target maps = source maps · W. The prompts must have the
    same number of words. Where each swapped word has as many tokens as the source word, W is the official
    ``seq_aligner.get_replacement_mapper`` (token for token; BOS, the other words, the end token and the padding
    in place). Deliberately not where the counts differ: here every token of the target word takes the mean of the
    source word's tokens' maps and everything after it stays aligned (the end token to the end token); the
    official code gives each target token the sum of the source word's maps divided by the target word's token
    count, and maps every position after the last swapped word to the same position j -> j, which puts the words
    after it off by the count difference (tests/unit/parity/test_p2p_parity.py measures the difference)."""
    if len(src.words) != len(tgt.words):
        raise ValueError(f"Replace swaps words one for one: the source has {len(src.words)} words "
                         f"({' '.join(src.words)}), the target {len(tgt.words)} ({' '.join(tgt.words)}); use Refine "
                         f"for prompts of different lengths")
    w = torch.zeros(length, length)
    _tail(src, tgt, w)
    for s, t in zip(src.spans, tgt.spans):
        _word_weights(s, t, w)
    return w


def align_words(a: Sequence, b: Sequence) -> list[Optional[int]]:
    """For every element of ``b``, the index of the element of ``a`` aligned with it, or None (inserted in ``b``): the
    official global alignment (prompt-to-prompt ``seq_aligner.global_align`` / ``get_aligned_sequences``): scores
    S[i][j] = max(S[i][j−1] + 0, S[i−1][j] + 0, S[i−1][j−1] ± 1) (gap 0, match +1, mismatch −1), and a traceback
    from the end that, among equal scores, takes an insertion in ``b`` first, then a deletion from ``a``, then the
    diagonal. Where words repeat or are dropped this decides which copy a word is aligned with ('cat cat on on the'
    -> 'dog cat on': cat and on from the first copies)."""
    n, m = len(a), len(b)
    left, up, diag = 1, 2, 3
    score = [[0] * (m + 1) for _ in range(n + 1)]
    move = [[left] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        move[i][0] = up
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = (score[i][j - 1], score[i - 1][j], score[i - 1][j - 1] + (1 if a[i - 1] == b[j - 1] else -1))
            best = max(options)
            score[i][j] = best
            move[i][j] = left if best == options[0] else up if best == options[1] else diag
    out: list[Optional[int]] = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == diag:
            i, j = i - 1, j - 1
            out[j] = i
        elif step == left:
            j -= 1
        else:
            i -= 1
    return out


def refine_mapper(src: PromptTokens, tgt: PromptTokens, length: int) -> tuple[Tensor, Tensor]:
    """P2P Refine (words added to the source), the official ``seq_aligner.get_refinement_mapper``: (W, alpha) with
    target maps = alpha·(source maps · W) + (1 − alpha)·own maps. The token sequences (BOS, tokens, EOS) are aligned
    (``align_words``): an aligned target token takes its source token's map (alpha 1), an inserted one keeps its own
    (alpha 0); the padding after the target's end token maps position j to position j (alpha 1), whatever the
    source holds there."""
    w = torch.zeros(length, length)
    alpha = torch.zeros(length)
    b = tgt.sequence()
    for j, i in enumerate(align_words(src.sequence(), b)):
        if i is not None:
            w[i, j] = 1.0
            alpha[j] = 1.0
    for j in range(len(b), length):
        w[j, j] = 1.0
        alpha[j] = 1.0
    return w, alpha


def reweight_vector(tgt: PromptTokens, words: Sequence[str], factor: float, length: int) -> Tensor:
    """[length]: ``factor`` on the tokens of ``words`` in the target prompt, 1 elsewhere (P2P's attention
    re-weighting)."""
    c = torch.ones(length)
    missing = [x for x in words if x not in tgt.words]
    if missing:
        raise ValueError(f"reweight_words: {quote(' '.join(missing))} is not in the target prompt, whose words are "
                         f"{quote(' '.join(tgt.words), 200)}; type words of the target prompt (space-separated), or "
                         f"clear reweight_words")
    for k, word in enumerate(tgt.words):
        if word in words:
            c[list(tgt.spans[k])] = float(factor)
    return c


@dataclass
class P2PSchedule:
    """Which steps of T swap what (P2P / P2Plus, the official code's rounding): cross-attention while
    i < int(τ_c·(T+1)), self-attention of the cond branch while i < int(τ_s·T), of the uncond branch (P2Plus) while
    i < int(τ_u·T); self-attention only in layers at ``self_min_divisor`` or coarser (≤ 32² queries at 512 px)."""
    steps: int
    tau_c: float = 0.6
    tau_s: float = 0.6
    tau_u: float = 0.0
    self_min_divisor: int = 2

    def cross(self, i: Optional[int]) -> bool:
        return i is not None and i < int(self.tau_c * (self.steps + 1))

    def self_cond(self, i: Optional[int]) -> bool:
        return i is not None and i < int(self.tau_s * self.steps)

    def self_uncond(self, i: Optional[int]) -> bool:
        return i is not None and i < int(self.tau_u * self.steps)


@dataclass
class P2PEdit(Controller):
    """Prompt-to-prompt on rows [source, target, …] of each chunk: in the cond chunk the targets' cross-attention
    maps become the source's through ``mapper`` (W [L, L], with ``alpha`` [L] for Refine; times ``reweight`` [L]) and
    their self-attention maps the source's; in the uncond chunk (P2Plus, τ_u) the self-attention maps. Row 0 is never
    changed. The official combination (``AttentionReweight`` around ``AttentionReplace`` / ``AttentionRefine``, on
    the schedules of ``P2PSchedule``): target ← (source·W) · c for Replace, (alpha·(source·W) + (1 − alpha)·own) · c
    for Refine, while the cross-attention is injected; own maps afterwards."""
    schedule: P2PSchedule
    mapper: Tensor
    alpha: Optional[Tensor] = None
    reweight: Optional[Tensor] = None

    def wants(self, call: Call) -> bool:
        i, s = call.step, self.schedule
        if call.kind == CROSS:
            return s.cross(i) and len(call.rows(COND)) > 1
        if call.divisor < s.self_min_divisor:
            return False
        return (s.self_cond(i) and len(call.rows(COND)) > 1) or (s.self_uncond(i) and len(call.rows(UNCOND)) > 1)

    def labels(self, call: Call) -> Optional[set]:
        s = self.schedule
        if call.kind == CROSS:
            return {COND}
        return {lb for lb, on in ((COND, s.self_cond(call.step)), (UNCOND, s.self_uncond(call.step))) if on}

    def edit(self, probs: Tensor, call: Call) -> Tensor:
        out = probs.clone()
        s = self.schedule
        labels = [COND] if call.kind == CROSS else (
            [lb for lb, on in ((COND, s.self_cond(call.step)), (UNCOND, s.self_uncond(call.step))) if on])
        for label in labels:
            src = call.rows(label, 0)
            if not src:
                continue
            base = probs[src[0]]
            for t in call.rows(label):
                if t == src[0]:
                    continue
                if call.kind == SELF:
                    new = base
                else:
                    m = self.mapper.to(base)
                    new = base @ m[: base.shape[-1], : base.shape[-1]]
                    if self.alpha is not None:
                        a = self.alpha.to(base)[: base.shape[-1]]
                        new = a * new + (1 - a) * probs[t]
                    if self.reweight is not None:
                        new = new * self.reweight.to(base)[: base.shape[-1]]
                if not torch.equal(new, probs[t]):  # equal prompts: the row stays the fused kernel's, bit for bit
                    out[t] = new
                    call.changed.add(t)
        return out


# -- LocalBlend ---------------------------------------------------------------------------------------------------

def word_positions(prompt: PromptTokens, words: Sequence[str], where: str = "LocalBlend words") -> list[int]:
    """The token positions of every occurrence of ``words`` in a prompt (the official ``get_word_inds`` of a word
    given as text); a word the prompt lacks is an error naming ``where`` (the input and its prompt), the prompt's
    words and what to type."""
    out = []
    missing = [w for w in words if w not in prompt.words]
    if missing:
        raise ValueError(f"{where}: {quote(' '.join(missing))} is not in the prompt, whose words are "
                         f"{quote(' '.join(prompt.words), 200)}; type words of that prompt (space-separated), or clear "
                         f"the input")
    for k, w in enumerate(prompt.words):
        if w in words:
            out += list(prompt.spans[k])
    return sorted(out)


def blend_mask(maps: list, tokens: Sequence[Sequence[int]], latent_hw: tuple, threshold: float = 0.3) -> Tensor:
    """P2P's LocalBlend mask [rows, 1, H, W] from cond cross-attention maps (``maps``: (layer, probs [rows, heads,
    N, L]) of equal N; LocalBlend hands the running sum since step 0): per row, the maps of that row's blend
    ``tokens`` summed over layers, heads and tokens, 3×3 max-pooled, upsampled to the latent (nearest), divided by
    their max and thresholded (> ``threshold``); the rows' masks are joined (one mask for all rows, as the official
    union of source and target)."""
    if not maps:
        raise ValueError("LocalBlend has no attention maps for this step")
    acc = sum(_wide(p).sum(1) for _, p in maps)                       # [rows, N, L]
    rows, n, _ = acc.shape
    side = int(round(math.sqrt(n * latent_hw[1] / latent_hw[0])))
    grid = (n // side, side)
    per_row = []
    for r in range(rows):
        idx = list(tokens[r]) if r < len(tokens) else []
        m = acc[r][:, idx].sum(-1) if idx else acc.new_zeros(n)
        per_row.append(m.view(1, 1, *grid))
    m = torch.nn.functional.max_pool2d(torch.cat(per_row), 3, stride=1, padding=1)
    m = torch.nn.functional.interpolate(m, size=latent_hw, mode="nearest")
    m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    union = (m > threshold).any(0, keepdim=True).float()
    return union.expand(rows, 1, *latent_hw)


def local_blend(x: Tensor, mask: Tensor, source_row: int = 0) -> Tensor:
    """Every row r ← mask·x[r] + (1 − mask)·x[source] (= x[source] + mask·(x[r] − x[source])): outside the mask the
    targets keep the source; an all-ones mask changes nothing and an all-zeros one gives the source, bit for bit."""
    src = x[source_row: source_row + 1]
    m = mask.to(x)
    return x * m + src * (1 - m)


def add_maps(total: Optional[list], maps: list) -> list:
    """The official ``AttentionStore.between_steps``: the running sum since step 0, layer by layer (in call order),
    of each step's maps; heads are summed on the way (LocalBlend sums them anyway), so the sum holds one
    [rows, 1, N, L] tensor per layer, whatever the number of steps."""
    step = [(layer, _wide(p).sum(1, keepdim=True)) for layer, p in maps]
    if total is None:
        return step
    if [layer for layer, _ in total] != [layer for layer, _ in step]:
        raise ValueError("LocalBlend: this step's attention layers differ from the earlier steps'")
    return [(layer, t + p) for (layer, t), (_, p) in zip(total, step)]


class LocalBlend:
    """P2P's LocalBlend as the official code runs it (``AttentionControlEdit.step_callback`` calls
    ``LocalBlend(x_t, self.attention_store)`` after every step): the step's cond cross-attention maps of the blend
    layers are added to the running sum since step 0 (``add_maps``), and from step ``start`` on (the official
    ``counter > int(start_blend·T)``) the mask of that sum (``blend_mask``) keeps the source outside it
    (``local_blend``). ``mask`` is the last mask [1, 1, H, W] (None before ``start``)."""

    def __init__(self, tokens: Sequence[Sequence[int]], start: int, threshold: float = 0.3):
        self.tokens, self.start, self.threshold = [list(t) for t in tokens], int(start), float(threshold)
        self.total: Optional[list] = None
        self.mask: Optional[Tensor] = None

    def __call__(self, i: int, maps: list, x: Tensor) -> Tensor:
        """After step ``i``, with that step's maps (``CaptureMaps.maps[i]``): the blended rows."""
        if not maps:
            raise ValueError(f"LocalBlend has no attention maps for step {i}")
        self.total = add_maps(self.total, maps)
        if i < self.start:
            return x
        self.mask = blend_mask(self.total, self.tokens, tuple(x.shape[-2:]), self.threshold)[:1]
        return local_blend(x, self.mask)


# -- what goes into cross-attention -------------------------------------------------------------------------------

def _tile(t: Tensor, length: int) -> Tensor:
    """[L, D] over a context of ``length`` = k·L tokens (long prompts: one copy per 77-token chunk)."""
    if length % t.shape[0]:
        raise ValueError(f"a context of {length} tokens is not a whole number of {t.shape[0]}-token chunks")
    return t.repeat(length // t.shape[0], 1)


def _at(t: Tensor, i) -> Tensor:
    """t[i] of a [T, …] tensor for an integer step, or the linear blend of its two neighbours for a fractional one
    (clamped to the last; an integer position gives t[i] exactly)."""
    last = t.shape[0] - 1
    lo = min(int(math.floor(i)), last)
    w = float(i) - lo
    if w <= 0 or lo == last:
        return t[lo]
    return (1 - w) * t[lo] + w * t[lo + 1]


def baked(scale: Tensor, shift: Tensor) -> Callable[[float], tuple[Tensor, Tensor]]:
    """Step i -> (A_i, B_i) from [T, L, D] tensors (fractional i blends neighbours; past the end: the last)."""
    return lambda i: (_at(scale, i), _at(shift, i))


def value_film(values: Callable[[int], tuple[Tensor, Tensor]], step: Callable[[dict], Optional[int]],
               strength: float = 1.0, labels: Sequence[int] = (COND,),
               active: Callable[[int, int], bool] = lambda i, row: True) -> Callable:
    """StyleDiffusion's value input as an attn2_patch: for the rows with ``labels``, V input = c ⊙ A_i + B_i with
    A' = 1 + s·(A − 1), B' = s·B (s = ``strength``), (A_i, B_i) = ``values(i)`` [L, D] at the call's step i; the keys
    keep c (the text). Where ``active(i, prompt row)`` is False (τ_v), and for other rows, the value stays c. A = 1,
    B = 0 (or s = 0) changes nothing, bit for bit. ``values`` may return tensors with gradients (training), or None
    (no change)."""
    def fn(n: Tensor, context: Tensor, value: Tensor, extra_options: dict):
        i = step(extra_options)
        if i is None or strength == 0:
            return n, context, value
        rows = [r for r, (lb, pr) in enumerate(row_labels(extra_options.get("cond_or_uncond"), context.shape[0]))
                if lb in labels and active(i, pr)]
        ab = values(i) if rows else None
        if ab is None:  # no rows, or no values yet (an inversion's plain pass)
            return n, context, value
        a, b = ab
        if strength != 1:
            a, b = 1 + strength * (a - 1), strength * b
        a, b = _tile(a, context.shape[1]).to(context.device), _tile(b, context.shape[1]).to(context.device)
        v = value.clone()
        v[rows] = (context[rows].to(a.dtype) * a + b).to(value.dtype)  # gradients reach A, B through the copy
        return n, context, v
    return fn


def per_step(embeds: Tensor) -> Callable[[float], Tensor]:
    """Step i -> embeds[i] of a [T, L, D] tensor (fractional i blends neighbours; past the end: the last)."""
    return lambda i: _at(embeds, i)


def context_rows(embed: Callable[[int], Tensor], step: Callable[[dict], Optional[int]], label: int = UNCOND) -> Callable:
    """Null-text inversion's per-step unconditional embedding as an attn2_patch: the rows with ``label`` take
    ``embed(i)`` [L, D] for both keys and values at step i (others unchanged; ``embed`` may carry gradients, or
    return None: no change)."""
    def fn(n: Tensor, context: Tensor, value: Tensor, extra_options: dict):
        i = step(extra_options)
        if i is None:
            return n, context, value
        rows = [r for r, (lb, _) in enumerate(row_labels(extra_options.get("cond_or_uncond"), context.shape[0]))
                if lb == label]
        e = embed(i) if rows else None
        if e is None:
            return n, context, value
        e = _tile(e, context.shape[1]).to(context.device, context.dtype)
        same = value is context
        context = context.clone()
        context[rows] = e
        if same:
            return n, context, context
        value = value.clone()
        value[rows] = e
        return n, context, value
    return fn
