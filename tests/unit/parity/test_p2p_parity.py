"""Parity of prompt-to-prompt / P2Plus editing (``hooks/attention.py``) with the official code (issue 24, items 10-12).

Reference: an independent float64 transcription, written from the official repositories (not from the pack):

- google/prompt-to-prompt ``seq_aligner.py`` (identical in sen-mao/StyleDiffusion):
  ``global_align`` (score matrix with gap 0, match +1, mismatch −1; ``trace_back`` 1 = left, 2 = up, 3 = diag,
  written in the order ``if matrix[i, j] == left ... elif == up ... else diag``, so ties go left, then up),
  ``get_aligned_sequences`` (walks back from (len x, len y), appends (j, i) on a diagonal move and (j, −1) on a
  left move), ``get_mapper`` (aligns ``tokenizer.encode`` of both prompts, BOS and EOS included; alphas = mapper ≠
  −1; the positions after the target's sequence map to themselves: ``mapper[len(y):] = len(y) + arange(77 −
  len(y))``), ``get_refinement_mapper``, ``get_word_inds``, ``get_replacement_mapper_`` (words that differ at
  the same place: token for token when the counts agree, else ``mapper[src, t] = 1/len(tgt)``; the positions
  before the last swapped word advance together, those after it map ``mapper[j, j] = 1``).
- sen-mao/StyleDiffusion ``stylediffusion.py`` (P2Plus; the same classes as google's null_text_w_ptp.ipynb):
  ``LocalBlend`` (``__call__(x_t, attention_store)``: ``counter += 1``, from ``counter > int(start_blend·T)`` the
  maps ``attention_store["down_cross"][2:4] + ["up_cross"][:3]`` (the quarter-resolution layers), ``(maps ·
  alpha).sum(-1).mean(1)``, 3×3 max-pool, nearest upsample to the latent, ÷ max, ``> th``, ``mask[:1] + mask``,
  ``x_t[:1] + mask·(x_t − x_t[:1])``), ``AttentionControl.__call__`` (LOW_RESOURCE: the first num_att_layers calls
  of a step are the uncond pass → ``replace_uncond``, the next the cond pass → ``forward``; ``between_steps``
  after the last), ``AttentionStore`` (stores the cond maps of layers with ≤ 32² queries; ``between_steps`` adds
  each step's maps to ``attention_store``: the running sum since step 0), ``AttentionControlEdit`` (``step_callback``
  hands LocalBlend ``self.attention_store``; cross: ``replace_cross_attention(base, replace)·alpha_words + (1 −
  alpha_words)·replace``; self while ``num_self_replace[0] ≤ cur_step < num_self_replace[1]`` with
  ``int(T·τ_s)``, only where ≤ 32² queries; P2Plus ``replace_uncond``: uncond self-attention for ``int(T·τ_u)``
  steps), ``AttentionReplace`` (``einsum('hpw,bwn->bhpn', base, mapper)``), ``AttentionRefine`` (``base[:, :,
  mapper]·alphas + replace·(1 − alphas)``), ``AttentionReweight`` (the previous controller's result × equalizer),
  ``get_equalizer``, ``make_controller`` (Reweight wraps Replace/Refine, one LocalBlend).
- sen-mao/StyleDiffusion ``ptp_utils_v.py``: ``get_time_words_attention_alpha`` / ``update_alpha_time_word``
  (``alpha[: int(τ_c·(T+1))] = 1`` over T + 1 rows), ``diffusion_step`` (uncond and cond passes apart, CFG, the
  DDIM step, ``step_callback``), ``register_attention_control`` (``attn = softmax(q·kᵀ·scale)``, ``attn =
  controller(attn, is_cross, place)``, ``out = attn·v``, heads folded into the batch, batch-major).

The official code hard-codes SD1.5 at 512 px (a 64² latent, maps of 16² layers, self-attention swapped where ≤ 32²
queries); the toy latent here is 24², so those read 24, 6 and 12² (the pack's rule: latent/4 and latent/2).

Toy model: a seeded float64 U-Net-shaped network (16 transformer blocks at latent/1, /2, /4, /8 in SD1.5's order:
down 1,1,2,2,4,4, mid 8, up 4,4,4,2,2,2,1,1,1; self- and cross-attention with 2 heads, tanh MLPs), a toy tokenizer
(some words two or three tokens, pieces shared between words) and toy text embeddings. The pack runs its own way:
one batched call [cond src, cond tgt, uncond src, uncond tgt] through ``replace_patch`` with ``P2PEdit`` and
``CaptureMaps``, the σ-space Euler step (= DDIM) and ``LocalBlend``; the reference runs the official loop.

Tolerance 1e-10 relative (float64). Deliberate difference shown with its size: Replace where a swapped word has
another token count than the source word.
"""
import random
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from invedit.hooks import attention as A

F64 = torch.float64
TOL = 1e-10
LATENT = 24            # the official 64
MAX_NUM_WORDS = 77
LOW_RESOURCE = True
MUT: set = set()       # planted mutations of the reference (empty: the official code)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# -- a toy tokenizer ---------------------------------------------------------------------------------------------

class ToyTokenizer:
    """Words of up to 4 letters are one token; longer ones split into pieces of 3 letters (pieces shared between
    words share the id). ``encode`` adds BOS and EOS as the CLIP tokenizer does; ``decode([id])`` is the piece."""
    BOS_ID, EOS_ID = 49406, 49407

    def __init__(self):
        self.pieces = {}

    def split(self, word):
        return [word] if len(word) <= 4 else [word[k:k + 3] for k in range(0, len(word), 3)]

    def piece_id(self, piece):
        i = 1000 + zlib.crc32(piece.encode()) % 48000      # the same id whatever ran before
        assert self.pieces.setdefault(i, piece) == piece, "two pieces share an id"
        return i

    def encode(self, text):
        return [self.BOS_ID] + [self.piece_id(p) for w in text.split(" ") for p in self.split(w)] + [self.EOS_ID]

    def decode(self, ids):
        return "".join(self.pieces.get(i, "") for i in ids)


tokenizer = ToyTokenizer()


def prompt_tokens(text) -> A.PromptTokens:
    """What ``adapters.stylediffusion.prompt_tokens`` builds from ComfyUI's tokenizer, from the toy one."""
    spans, ids, pos = [], [], 1
    for w in text.split(" "):
        toks = [tokenizer.piece_id(p) for p in tokenizer.split(w)]
        spans.append(tuple(range(pos, pos + len(toks))))
        ids += toks
        pos += len(toks)
    return A.PromptTokens(tuple(text.split(" ")), tuple(spans), pos, tuple(ids))


# -- the official code, transcribed (seq_aligner.py) ---------------------------------------------------------------

class ScoreParams:
    def __init__(self, gap, match, mismatch):
        self.gap, self.match, self.mismatch = gap, match, mismatch

    def mis_match_char(self, x, y):
        return self.mismatch if x != y else self.match


def get_matrix(size_x, size_y, gap):
    matrix = np.zeros((size_x + 1, size_y + 1), dtype=np.int32)
    matrix[0, 1:] = (np.arange(size_y) + 1) * gap
    matrix[1:, 0] = (np.arange(size_x) + 1) * gap
    return matrix


def get_traceback_matrix(size_x, size_y):
    matrix = np.zeros((size_x + 1, size_y + 1), dtype=np.int32)
    matrix[0, 1:] = 1
    matrix[1:, 0] = 2
    matrix[0, 0] = 4
    return matrix


def global_align(x, y, score):
    matrix = get_matrix(len(x), len(y), score.gap)
    trace_back = get_traceback_matrix(len(x), len(y))
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left = matrix[i, j - 1] + score.gap
            up = matrix[i - 1, j] + score.gap
            diag = matrix[i - 1, j - 1] + score.mis_match_char(x[i - 1], y[j - 1])
            matrix[i, j] = max(left, up, diag)
            if "diag_first" in MUT and matrix[i, j] == diag:      # mutation: ties to the diagonal
                trace_back[i, j] = 3
            elif matrix[i, j] == left:
                trace_back[i, j] = 1
            elif matrix[i, j] == up:
                trace_back[i, j] = 2
            else:
                trace_back[i, j] = 3
    return matrix, trace_back


def get_aligned_sequences(x, y, trace_back):
    x_seq, y_seq, mapper_y_to_x = [], [], []
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        if trace_back[i, j] == 3:
            x_seq.append(x[i - 1])
            y_seq.append(y[j - 1])
            i, j = i - 1, j - 1
            mapper_y_to_x.append((j, i))
        elif trace_back[i][j] == 1:
            x_seq.append('-')
            y_seq.append(y[j - 1])
            j = j - 1
            mapper_y_to_x.append((j, -1))
        elif trace_back[i][j] == 2:
            x_seq.append(x[i - 1])
            y_seq.append('-')
            i = i - 1
        elif trace_back[i][j] == 4:
            break
    mapper_y_to_x.reverse()
    return x_seq, y_seq, torch.tensor(mapper_y_to_x, dtype=torch.int64)


def get_mapper(x: str, y: str, tokenizer, max_len=77):
    x_seq, y_seq = tokenizer.encode(x), tokenizer.encode(y)
    if "words" in MUT:                                             # mutation: align words, not tokens
        x_seq, y_seq = ["<s>"] + x.split(" ") + ["</s>"], ["<s>"] + y.split(" ") + ["</s>"]
    score = ScoreParams(0, 1, -1)
    matrix, trace_back = global_align(x_seq, y_seq, score)
    mapper_base = get_aligned_sequences(x_seq, y_seq, trace_back)[-1]
    alphas = torch.ones(max_len)
    alphas[: mapper_base.shape[0]] = mapper_base[:, 1].ne(-1).float()
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[:mapper_base.shape[0]] = mapper_base[:, 1]
    mapper[mapper_base.shape[0]:] = len(y_seq) + torch.arange(max_len - len(y_seq))
    if "pad_shift" in MUT:                                         # mutation: the pack before item 11
        x_len = len(x_seq)
        mapper[mapper_base.shape[0]:] = (x_len + torch.arange(max_len - len(y_seq))).clamp(max=max_len - 1)
    return mapper, alphas


def get_refinement_mapper(prompts, tokenizer, max_len=77):
    x_seq = prompts[0]
    mappers, alphas = [], []
    for i in range(1, len(prompts)):
        mapper, alpha = get_mapper(x_seq, prompts[i], tokenizer, max_len)
        mappers.append(mapper)
        alphas.append(alpha)
    return torch.stack(mappers), torch.stack(alphas)


def get_word_inds(text: str, word_place, tokenizer):
    split_text = text.split(" ")
    if type(word_place) is str:
        word_place = [i for i, word in enumerate(split_text) if word_place == word]
    elif type(word_place) is int:
        word_place = [word_place]
    out = []
    if len(word_place) > 0:
        words_encode = [tokenizer.decode([item]).strip("#") for item in tokenizer.encode(text)][1:-1]
        cur_len, ptr = 0, 0
        for i in range(len(words_encode)):
            cur_len += len(words_encode[i])
            if ptr in word_place:
                out.append(i + 1)
            if cur_len >= len(split_text[ptr]):
                ptr += 1
                cur_len = 0
    return np.array(out)


def get_replacement_mapper_(x: str, y: str, tokenizer, max_len=77):
    words_x, words_y = x.split(' '), y.split(' ')
    if len(words_x) != len(words_y):
        raise ValueError("attention replacement edit can only be applied on prompts with the same length")
    inds_replace = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    inds_source = [get_word_inds(x, i, tokenizer) for i in inds_replace]
    inds_target = [get_word_inds(y, i, tokenizer) for i in inds_replace]
    mapper = np.zeros((max_len, max_len))
    i = j = 0
    cur_inds = 0
    while i < max_len and j < max_len:
        if cur_inds < len(inds_source) and inds_source[cur_inds][0] == i:
            inds_source_, inds_target_ = inds_source[cur_inds], inds_target[cur_inds]
            if len(inds_source_) == len(inds_target_):
                if "reversed" in MUT:                           # mutation: a word's tokens in reverse order
                    inds_target_ = inds_target_[::-1]
                mapper[inds_source_, inds_target_] = 1
            else:
                ratio = 1 / len(inds_target_)
                for i_t in inds_target_:
                    mapper[inds_source_, i_t] = ratio
            cur_inds += 1
            i += len(inds_source_)
            j += len(inds_target_)
        elif cur_inds < len(inds_source):
            mapper[i, j] = 1
            i += 1
            j += 1
        else:
            mapper[j, j] = 1
            i += 1
            j += 1
    return torch.from_numpy(mapper).double()


def get_replacement_mapper(prompts, tokenizer, max_len=77):
    return torch.stack([get_replacement_mapper_(prompts[0], p, tokenizer, max_len) for p in prompts[1:]])


# -- the official code, transcribed (ptp_utils_v.py) ---------------------------------------------------------------

def update_alpha_time_word(alpha, bounds, prompt_ind, word_inds=None):
    if type(bounds) is float:
        bounds = 0, bounds
    rows = alpha.shape[0] - 1 if "cross_T" in MUT else alpha.shape[0]   # mutation: int(τ_c·T)
    start, end = int(bounds[0] * rows), int(bounds[1] * rows)
    if word_inds is None:
        word_inds = torch.arange(alpha.shape[2])
    alpha[: start, prompt_ind, word_inds] = 0
    alpha[start: end, prompt_ind, word_inds] = 1
    alpha[end:, prompt_ind, word_inds] = 0
    return alpha


def get_time_words_attention_alpha(prompts, num_steps, cross_replace_steps, tokenizer, max_num_words=77):
    if type(cross_replace_steps) is not dict:
        cross_replace_steps = {"default_": cross_replace_steps}
    if "default_" not in cross_replace_steps:
        cross_replace_steps["default_"] = (0., 1.)
    alpha_time_words = torch.zeros(num_steps + 1, len(prompts) - 1, max_num_words, dtype=F64)
    for i in range(len(prompts) - 1):
        alpha_time_words = update_alpha_time_word(alpha_time_words, cross_replace_steps["default_"], i)
    for key, item in cross_replace_steps.items():
        if key != "default_":
            inds = [get_word_inds(prompts[i], key, tokenizer) for i in range(1, len(prompts))]
            for i, ind in enumerate(inds):
                if len(ind) > 0:
                    alpha_time_words = update_alpha_time_word(alpha_time_words, item, i, ind)
    return alpha_time_words.reshape(num_steps + 1, len(prompts) - 1, 1, 1, max_num_words)


# -- the official code, transcribed (stylediffusion.py) ------------------------------------------------------------

NUM_DDIM_STEPS = 10


class LocalBlend:

    def get_mask(self, maps, alpha, use_pool):
        k = 1
        maps = (maps * alpha).sum(-1).mean(1)
        if use_pool:
            maps = nnf.max_pool2d(maps, (k * 2 + 1, k * 2 + 1), (1, 1), padding=(k, k))
        mask = nnf.interpolate(maps, size=(LATENT, LATENT))                       # official (64, 64)
        mask = mask / mask.max(2, keepdims=True)[0].max(3, keepdims=True)[0]
        mask = mask.gt(self.th[1 - int(use_pool)])
        mask = mask[:1] + mask
        return mask

    def __call__(self, x_t, attention_store):
        self.counter += 1
        if self.counter > self.start_blend + (1 if "blend_start" in MUT else 0):   # mutation: one step late
            q = LATENT // 4                                                         # official 16
            maps = attention_store["down_cross"][2:4] + attention_store["up_cross"][:3]
            maps = [item.reshape(self.alpha_layers.shape[0], -1, 1, q, q, MAX_NUM_WORDS) for item in maps]
            maps = torch.cat(maps, dim=1)
            mask = self.get_mask(maps, self.alpha_layers, True)
            if self.substruct_layers is not None:
                maps_sub = ~self.get_mask(maps, self.substruct_layers, False)
                mask = mask * maps_sub
            mask = mask.double()
            self.masks.append(mask[1:2].clone())
            x_t = x_t[:1] + mask * (x_t - x_t[:1])
        return x_t

    def __init__(self, prompts, words, substruct_words=None, start_blend=0.2, th=(.3, .3)):
        alpha_layers = torch.zeros(len(prompts), 1, 1, 1, 1, MAX_NUM_WORDS, dtype=F64)
        for i, (prompt, words_) in enumerate(zip(prompts, words)):
            if type(words_) is str:
                words_ = [words_]
            for word in words_:
                ind = get_word_inds(prompt, word, tokenizer)
                alpha_layers[i, :, :, :, :, ind] = 1
        self.substruct_layers = None
        self.alpha_layers = alpha_layers
        self.start_blend = int(start_blend * NUM_DDIM_STEPS)
        self.counter = 0
        self.th = th
        self.masks = []


class AttentionControl:

    def step_callback(self, x_t):
        return x_t

    def between_steps(self):
        return

    @property
    def num_uncond_att_layers(self):
        return self.num_att_layers if LOW_RESOURCE else 0

    def __call__(self, attn, is_cross: bool, place_in_unet: str):
        if self.cur_att_layer >= self.num_uncond_att_layers:
            if LOW_RESOURCE:
                attn = self.forward(attn, is_cross, place_in_unet)
            else:
                h = attn.shape[0]
                attn[h // 2:] = self.forward(attn[h // 2:], is_cross, place_in_unet)
        else:  # self-attn of unconditional branch
            attn = self.replace_uncond(attn, is_cross, place_in_unet)
        self.cur_att_layer += 1
        if self.cur_att_layer == self.num_att_layers + self.num_uncond_att_layers:
            self.cur_att_layer = 0
            self.cur_step += 1
            self.between_steps()
        return attn

    def __init__(self):
        self.cur_step = 0
        self.num_att_layers = -1
        self.cur_att_layer = 0


class AttentionStore(AttentionControl):

    @staticmethod
    def get_empty_store():
        return {"down_cross": [], "mid_cross": [], "up_cross": [],
                "down_self": [], "mid_self": [], "up_self": []}

    def forward(self, attn, is_cross: bool, place_in_unet: str):
        key = f"{place_in_unet}_{'cross' if is_cross else 'self'}"
        if attn.shape[1] <= (LATENT // 2) ** 2:  # official 32 ** 2: avoid memory overhead
            self.step_store[key].append(attn)
        return attn

    def replace_uncond(self, attn, is_cross: bool, place_in_unet: str):
        return attn

    def between_steps(self):
        self.last_step_store = self.step_store          # (kept for the mutation "blend with this step's maps")
        if len(self.attention_store) == 0:
            self.attention_store = self.step_store
        else:
            for key in self.attention_store:
                for i in range(len(self.attention_store[key])):
                    self.attention_store[key][i] += self.step_store[key][i]
        self.step_store = self.get_empty_store()

    def __init__(self):
        super().__init__()
        self.step_store = self.get_empty_store()
        self.attention_store = {}


class AttentionControlEdit(AttentionStore):

    def step_callback(self, x_t):
        if self.local_blend is not None:
            store = self.last_step_store if "blend_current_step" in MUT else self.attention_store
            x_t = self.local_blend(x_t, store)
        return x_t

    def replace_self_attention(self, attn_base, att_replace, place_in_unet):
        limit = (LATENT // 2) ** 2                                            # official 32 ** 2
        if att_replace.shape[2] < limit if "self_lt" in MUT else att_replace.shape[2] <= limit:
            attn_base = attn_base.unsqueeze(0).expand(att_replace.shape[0], *attn_base.shape)
            return attn_base
        else:
            return att_replace

    def forward(self, attn, is_cross: bool, place_in_unet: str):
        super().forward(attn, is_cross, place_in_unet)
        if is_cross or (self.num_self_replace[0] <= self.cur_step < self.num_self_replace[1]):
            h = attn.shape[0] // (self.batch_size)
            attn = attn.reshape(self.batch_size, h, *attn.shape[1:])
            attn_base, attn_repalce = attn[0], attn[1:]
            if is_cross:
                alpha_words = self.cross_replace_alpha[self.cur_step]
                attn_repalce_new = self.replace_cross_attention(attn_base, attn_repalce) * alpha_words + (
                    1 - alpha_words) * attn_repalce
                attn[1:] = attn_repalce_new
            else:
                attn[1:] = self.replace_self_attention(attn_base, attn_repalce, place_in_unet)
            attn = attn.reshape(self.batch_size * h, *attn.shape[2:])
        return attn

    def replace_uncond(self, attn, is_cross: bool, place_in_unet: str):
        super().replace_uncond(attn, is_cross, place_in_unet)
        end = self.num_uncond_self_replace[1] + (1 if "uncond_T" in MUT else 0)   # mutation: one step more
        if not is_cross and self.num_uncond_self_replace[0] <= self.cur_step < end:
            h = attn.shape[0] // (self.batch_size)
            attn = attn.reshape(self.batch_size, h, *attn.shape[1:])
            attn_base, attn_repalce = attn[0], attn[1:]
            attn[1:] = self.replace_self_attention(attn_base, attn_repalce, place_in_unet)
            attn = attn.reshape(self.batch_size * h, *attn.shape[2:])
        return attn

    def __init__(self, prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                 local_blend):
        super().__init__()
        self.batch_size = len(prompts)
        self.cross_replace_alpha = get_time_words_attention_alpha(prompts, num_steps, cross_replace_steps, tokenizer)
        if type(self_replace_steps) is float:
            self_replace_steps = 0, self_replace_steps
        self.num_self_replace = int(num_steps * self_replace_steps[0]), int(num_steps * self_replace_steps[1])
        if type(uncond_self_replace_steps) is float:
            uncond_self_replace_steps = 0, uncond_self_replace_steps
        self.num_uncond_self_replace = (int(num_steps * uncond_self_replace_steps[0]),
                                        int(num_steps * uncond_self_replace_steps[1]))
        self.local_blend = local_blend


class AttentionReplace(AttentionControlEdit):

    def replace_cross_attention(self, attn_base, att_replace):
        return torch.einsum('hpw,bwn->bhpn', attn_base, self.mapper)

    def __init__(self, prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                 local_blend=None):
        super().__init__(prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                         local_blend)
        self.mapper = get_replacement_mapper(prompts, tokenizer)


class AttentionRefine(AttentionControlEdit):

    def replace_cross_attention(self, attn_base, att_replace):
        attn_base_replace = attn_base[:, :, self.mapper].permute(2, 0, 1, 3)
        attn_replace = attn_base_replace * self.alphas + att_replace * (1 - self.alphas)
        return attn_replace

    def __init__(self, prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                 local_blend=None):
        super().__init__(prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                         local_blend)
        self.mapper, alphas = get_refinement_mapper(prompts, tokenizer)
        self.alphas = alphas.double().reshape(alphas.shape[0], 1, 1, alphas.shape[1])


class AttentionReweight(AttentionControlEdit):

    def replace_cross_attention(self, attn_base, att_replace):
        if self.prev_controller is not None:
            attn_base = self.prev_controller.replace_cross_attention(attn_base, att_replace)
        attn_replace = attn_base[None, :, :, :] * self.equalizer[:, None, None, :]
        return attn_replace

    def forward(self, attn, is_cross, place_in_unet):
        if "eq_always" in MUT and is_cross:                      # mutation: the equalizer after τ_c too
            out = super().forward(attn, is_cross, place_in_unet)
            if self.cross_replace_alpha[self.cur_step].max() == 0:
                h = out.shape[0] // self.batch_size
                out = out.reshape(self.batch_size, h, *out.shape[1:])
                out[1:] = out[1:] * self.equalizer[:, None, None, :]
                out = out.reshape(self.batch_size * h, *out.shape[2:])
            return out
        return super().forward(attn, is_cross, place_in_unet)

    def __init__(self, prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                 equalizer, local_blend=None, controller=None):
        super().__init__(prompts, num_steps, cross_replace_steps, self_replace_steps, uncond_self_replace_steps,
                         local_blend)
        self.equalizer = equalizer
        self.prev_controller = controller


def get_equalizer(text, word_select, values):
    if type(word_select) is int or type(word_select) is str:
        word_select = (word_select,)
    equalizer = torch.ones(1, 77, dtype=F64)
    for word, val in zip(word_select, values):
        inds = get_word_inds(text, word, tokenizer)
        equalizer[:, inds] = val
    return equalizer


def make_controller(prompts, is_replace_controller, cross_replace_steps, self_replace_steps,
                    uncond_self_replace_steps, blend_words=None, equilizer_params=None):
    lb = None if blend_words is None else LocalBlend(prompts, blend_words)
    cls = AttentionReplace if is_replace_controller else AttentionRefine
    controller = cls(prompts, NUM_DDIM_STEPS, cross_replace_steps=cross_replace_steps,
                     self_replace_steps=self_replace_steps, uncond_self_replace_steps=uncond_self_replace_steps,
                     local_blend=lb)
    if equilizer_params is not None:
        eq = get_equalizer(prompts[1], equilizer_params["words"], equilizer_params["values"])
        controller = AttentionReweight(prompts, NUM_DDIM_STEPS, cross_replace_steps=cross_replace_steps,
                                       self_replace_steps=self_replace_steps,
                                       uncond_self_replace_steps=uncond_self_replace_steps,
                                       equalizer=eq, local_blend=lb, controller=controller)
    return controller


# -- the toy model -------------------------------------------------------------------------------------------------

HEADS, DHEAD, CH, CTX = 2, 4, 8, 12
BLOCKS = [("down", 1), ("down", 1), ("down", 2), ("down", 2), ("down", 4), ("down", 4), ("mid", 8),
          ("up", 4), ("up", 4), ("up", 4), ("up", 2), ("up", 2), ("up", 2), ("up", 1), ("up", 1), ("up", 1)]


def norm(t):
    """LayerNorm over the channels, without affine parameters (as before every attention of SD's blocks)."""
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()


OBJECTS = ("cat", "dog", "sitting")  # words whose tokens the toy text encoder marks as objects (its last channel)


class ToyUNet:
    """ε(z, σ, context): a 1×1 conv in; per block (SD1.5's order of query grids) avg-pool to the block's grid,
    self-attention, cross-attention to the context, a tanh MLP (each after a LayerNorm), nearest upsample of the
    block's change; a 1×1 conv out. Like an image's, the cross-attention of object words is local: the queries carry
    a Gaussian bump (an object whose place drifts with σ) along a direction that the keys of object tokens (the
    context's last channel) share. ``attention(q, k, v, is_cross, place, index)`` is the hook: the official
    ``ca_forward`` or the pack's replace patches."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s, sc=1.0: torch.randn(*s, generator=g, dtype=F64) * sc  # noqa: E731
        self.w_in, self.w_out, self.w_t = r(CH, 4, sc=0.5), r(4, CH, sc=0.3), r(CH, sc=0.5)
        self.e = r(CH)
        self.e = self.e / self.e.norm()
        self.blocks = []
        for _ in BLOCKS:
            p = {k: r(*s, sc=sc) for k, s, sc in (
                ("q1", (CH, CH), 0.8), ("k1", (CH, CH), 0.8), ("v1", (CH, CH), 0.5), ("o1", (CH, CH), 0.4),
                ("q2", (CH, CH), 0.5), ("k2", (CTX, CH), 0.8), ("v2", (CTX, CH), 0.5), ("o2", (CH, CH), 0.4),
                ("m1", (CH, CH), 0.6), ("m2", (CH, CH), 0.4))}
            p["k2"][-1] = 5.0 * self.e
            self.blocks.append(p)

    def bump(self, sigma):
        """[1, 1, S, S]: the object, centred at (0.25 + 0.3·s)·S, s = log σ on [log 0.03, log 14.6] -> [0, 1]."""
        s = (np.log(sigma) - np.log(0.03)) / (np.log(14.6) - np.log(0.03))
        c = (0.25 + 0.3 * s) * LATENT
        yy, xx = torch.meshgrid(torch.arange(LATENT, dtype=F64), torch.arange(LATENT, dtype=F64), indexing="ij")
        return torch.exp(-((yy - c) ** 2 + (xx - 0.8 * c) ** 2) / (2 * (LATENT / 7) ** 2))[None, None]

    def __call__(self, z, sigma, context, attention):
        b = z.shape[0]
        h = torch.einsum("oc,bchw->bohw", self.w_in, z) + (self.w_t * np.log(sigma))[None, :, None, None]
        bump = self.bump(sigma)
        counters = {}
        for (place, div), p in zip(BLOCKS, self.blocks):
            index = counters[place] = counters.get(place, -1) + 1
            hb = nnf.avg_pool2d(h, div) if div > 1 else h
            side = hb.shape[-1]
            t = hb.flatten(2).transpose(1, 2)                                      # [B, N, C]
            qpos = 4.0 * (2 * (nnf.avg_pool2d(bump, div) if div > 1 else bump) - 1).flatten(2).transpose(1, 2) * self.e
            t0 = t
            n = norm(t)
            t = t + attention(n @ p["q1"], n @ p["k1"], n @ p["v1"], False, place, index) @ p["o1"]
            q2 = norm(t) @ p["q2"] + qpos
            t = t + attention(q2, context @ p["k2"], context @ p["v2"], True, place, index) @ p["o2"]
            t = t + torch.tanh(norm(t) @ p["m1"]) @ p["m2"]
            delta = (t - t0).transpose(1, 2).reshape(b, CH, side, side)
            h = h + (nnf.interpolate(delta, scale_factor=div, mode="nearest") if div > 1 else delta)
        return torch.einsum("oc,bchw->bohw", self.w_out, torch.tanh(h))


def embed(prompt):
    """Toy text encoder: [1, 77, CTX] from the token ids (padded with EOS), a fixed random table and positions; the
    last channel is 1 on the tokens of OBJECTS, 0 elsewhere."""
    ids = tokenizer.encode(prompt) if prompt else [ToyTokenizer.BOS_ID, ToyTokenizer.EOS_ID]
    ids = ids + [ToyTokenizer.EOS_ID] * (MAX_NUM_WORDS - len(ids))
    g = torch.Generator().manual_seed(1234)
    table = torch.randn(50000, CTX, generator=g, dtype=F64)
    pos = torch.randn(MAX_NUM_WORDS, CTX, generator=g, dtype=F64) * 0.3
    x = table[torch.tensor(ids)] + pos
    out = torch.tanh(x + 0.5 * torch.cumsum(x, 0) / torch.arange(1, 78, dtype=F64)[:, None])
    objects = {tokenizer.piece_id(piece) for w in OBJECTS for piece in tokenizer.split(w)}
    out[:, -1] = torch.tensor([float(i in objects) for i in ids], dtype=F64)
    return out[None]


SIGMAS = [14.6, 8.0, 5.0, 3.2, 2.0, 1.3, 0.8, 0.5, 0.3, 0.15, 0.03]   # T = 10 steps
GUIDANCE = 5.0


def official_edit(net, prompts, controller, z_T):
    """ptp_utils_v.text2image_ldm_stable / diffusion_step with LOW_RESOURCE: the uncond pass, the cond pass, CFG,
    the DDIM step (ᾱ = 1/(1+σ²)), controller.step_callback; the attention of every layer through ca_forward."""
    def ca_forward(q, k, v, is_cross, place, index):
        b = q.shape[0]
        q, k, v = (x.reshape(b, x.shape[1], HEADS, DHEAD).permute(0, 2, 1, 3).reshape(b * HEADS, x.shape[1], DHEAD)
                   for x in (q, k, v))
        sim = torch.einsum("b i d, b j d -> b i j", q, k) * DHEAD ** -0.5
        attn = sim.softmax(dim=-1)
        attn = controller(attn, is_cross, place)
        out = torch.einsum("b i j, b j d -> b i d", attn, v)
        return out.reshape(b, HEADS, -1, DHEAD).permute(0, 2, 1, 3).reshape(b, -1, HEADS * DHEAD)

    controller.num_att_layers = 2 * len(BLOCKS)
    uncond = embed("").expand(len(prompts), -1, -1)
    text = torch.cat([embed(p) for p in prompts])
    latents = z_T.expand(len(prompts), *z_T.shape[1:]).clone()
    for i in range(len(SIGMAS) - 1):
        s, s_prev = SIGMAS[i], SIGMAS[i + 1]
        noise_pred_uncond = net(latents, s, uncond, ca_forward)
        noise_prediction_text = net(latents, s, text, ca_forward)
        noise_pred = noise_pred_uncond + GUIDANCE * (noise_prediction_text - noise_pred_uncond)
        a_t, a_prev = 1 / (1 + s ** 2), 1 / (1 + s_prev ** 2)
        pred_x0 = (latents - (1 - a_t) ** 0.5 * noise_pred) / a_t ** 0.5
        latents = a_prev ** 0.5 * pred_x0 + (1 - a_prev) ** 0.5 * noise_pred
        latents = controller.step_callback(latents)
    return latents


def pack_edit(net, source, target, z_T, mode, tau_c, tau_s, tau_u, reweight=None, blend=None):
    """What adapters.stylediffusion.edit and P2PSampler do, with the pack's pure parts: one batched call
    [cond src, cond tgt, uncond src, uncond tgt] (cond_or_uncond [0, 1]) through replace patches with P2PEdit and
    CaptureMaps, CFG, the σ-space Euler step (= DDIM), LocalBlend."""
    T = len(SIGMAS) - 1
    src, tgt = prompt_tokens(source), prompt_tokens(target)
    if mode == "replace":
        mapper, alpha = A.replace_mapper(src, tgt, MAX_NUM_WORDS), None
    else:
        mapper, alpha = A.refine_mapper(src, tgt, MAX_NUM_WORDS)
    rw = A.reweight_vector(tgt, reweight[0], reweight[1], MAX_NUM_WORDS) if reweight else None
    state = {"step": None}
    step = lambda eo: state["step"]  # noqa: E731
    ctl = A.P2PEdit(A.P2PSchedule(T, tau_c, tau_s, tau_u, 2), mapper, alpha, rw)
    capture = A.CaptureMaps((4,))
    patches = {True: A.replace_patch(A.CROSS, [ctl, capture], step, A.sdpa),
               False: A.replace_patch(A.SELF, [ctl], step, A.sdpa)}
    lb = (A.LocalBlend([A.word_positions(src, blend[0]), A.word_positions(tgt, blend[1])], int(0.2 * T), 0.3)
          if blend else None)
    masks = []

    def attention(q, k, v, is_cross, place, index):
        return patches[is_cross](q, k, v, dict(n_heads=HEADS, cond_or_uncond=[0, 1], block=(place, index),
                                               block_index=0, original_shape=[4, 4, LATENT, LATENT]))

    context = torch.cat([embed(source), embed(target), embed(""), embed("")])
    x = (z_T * (1 + SIGMAS[0] ** 2) ** 0.5).expand(2, *z_T.shape[1:]).clone()
    for i in range(T):
        s, s_next = SIGMAS[i], SIGMAS[i + 1]
        state["step"] = i
        capture.clear()
        eps = net((x / (1 + s ** 2) ** 0.5).repeat(2, 1, 1, 1), s, context, attention)
        d = x - s * (eps[2:] + GUIDANCE * (eps[:2] - eps[2:]))                 # the guider's CFG denoised
        x = x + (s_next - s) * (x - d) / s
        if lb is not None:
            x = lb(i, capture.maps.get(i, []), x)
            if lb.mask is not None:
                masks.append(lb.mask.clone())
    return x / (1 + SIGMAS[-1] ** 2) ** 0.5, masks


# -- mappers ---------------------------------------------------------------------------------------------------------

VOCAB = ["a", "cat", "on", "the", "dog", "mat", "crimson", "cricket", "sitting", "red"]


def random_pairs(n, seed=0):
    """Source prompts with repeated words, targets made by dropping, inserting, duplicating and swapping words."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src = [rng.choice(VOCAB[:6] if rng.random() < 0.6 else VOCAB) for _ in range(rng.randint(2, 7))]
        tgt = list(src)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.35 and len(tgt) > 1:
                tgt.pop(rng.randrange(len(tgt)))
            elif op < 0.7:
                tgt.insert(rng.randrange(len(tgt) + 1), rng.choice(VOCAB))
            elif op < 0.85:
                k = rng.randrange(len(tgt))
                tgt.insert(k, tgt[k])
            else:
                tgt[rng.randrange(len(tgt))] = rng.choice(VOCAB)
        pairs.append((" ".join(src), " ".join(tgt)))
    return pairs


def maps_pair(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.softmax(torch.randn(HEADS, 16, MAX_NUM_WORDS, generator=g, dtype=F64) * 2, -1)
    own = torch.softmax(torch.randn(1, HEADS, 16, MAX_NUM_WORDS, generator=g, dtype=F64) * 2, -1)
    return base, own


def refine_official(src, tgt, base, own):
    mapper, alphas = get_refinement_mapper([src, tgt], tokenizer)
    alphas = alphas.double().reshape(1, 1, 1, MAX_NUM_WORDS)
    return base[:, :, mapper].permute(2, 0, 1, 3) * alphas + own * (1 - alphas)


def refine_pack(src, tgt, base, own):
    w, a = A.refine_mapper(prompt_tokens(src), prompt_tokens(tgt), MAX_NUM_WORDS)
    return a.double() * (base @ w.double()) + (1 - a.double()) * own


def refine_max_rel(pairs):
    worst = 0.0
    for k, (s, t) in enumerate(pairs):
        base, own = maps_pair(k)
        worst = max(worst, rel(refine_pack(s, t, base, own), refine_official(s, t, base, own)))
    return worst


def test_refine_matches_the_official_mapper_on_200_random_prompt_pairs():
    """Items 11 and 12: the target maps through Refine equal the official get_refinement_mapper's on 200 random
    pairs with repeated, dropped, inserted and duplicated words (multi-token words sharing pieces)."""
    MUT.clear()
    pairs = random_pairs(200)
    assert refine_max_rel(pairs) <= TOL
    # the example: 'dog cat on' takes cat and on from the first copies (source tokens 1 and 3)
    w, alpha = A.refine_mapper(prompt_tokens("cat cat on on the"), prompt_tokens("dog cat on"), MAX_NUM_WORDS)
    src_of = [int(w[:, j].argmax()) if alpha[j] else None for j in (1, 2, 3)]
    assert src_of == [None, 1, 3]
    mapper, _ = get_mapper("cat cat on on the", "dog cat on", tokenizer)
    assert mapper[1:4].tolist() == [-1, 1, 3]
    # planted mutations of the reference: each moves the result far beyond the tolerance
    moved = {}
    for mut in ("diag_first", "pad_shift", "words"):
        MUT.clear()
        MUT.add(mut)
        moved[mut] = refine_max_rel(pairs)
        differing = sum(refine_max_rel([p]) > TOL for p in pairs)
        assert moved[mut] > 1000 * TOL and differing > 0, (mut, moved[mut], differing)
    MUT.clear()
    print("refine: max rel diff", refine_max_rel(pairs), "mutations", moved)


def test_refine_padding_maps_to_itself_and_tie_breaking_counts():
    """Item 11's padding identity and item 12's tie-breaking, counted over the 200 pairs: how many pairs the old
    pack (padding shifted by the length difference; word LCS preferring deletions) would get wrong."""
    MUT.clear()
    pairs = random_pairs(200)
    MUT.add("pad_shift")
    shifted = sum(refine_max_rel([p]) > TOL for p in pairs)
    MUT.clear()
    MUT.add("diag_first")
    ties = sum(refine_max_rel([p]) > TOL for p in pairs)
    MUT.clear()
    lengths = [len(tokenizer.encode(s)) != len(tokenizer.encode(t)) for s, t in pairs]
    assert shifted == sum(lengths)  # every pair whose token counts differ
    assert ties > 0
    print(f"refine: {shifted} of 200 pairs differ by the padding shift, {ties} by the tie-breaking order")


def replace_pairs(n, seed=1, equal=True):
    rng = random.Random(seed)
    same = [["cat", "dog", "mat", "red"], ["crimson", "cricket", "sitting"]]  # 1 token / 3 tokens each
    out = []
    while len(out) < n:
        src = [rng.choice(VOCAB) for _ in range(rng.randint(2, 6))]
        tgt = list(src)
        k = rng.randrange(len(src))
        group = [g for g in same if src[k] in g]
        if equal:
            if not group:
                continue
            tgt[k] = rng.choice([w for w in group[0] if w != src[k]])
        else:
            tgt[k] = "sitting" if len(tokenizer.split(src[k])) == 1 else "dog"
        out.append((" ".join(src), " ".join(tgt)))
    return out


def replace_max_rel(pairs):
    worst = 0.0
    for k, (s, t) in enumerate(pairs):
        base, _ = maps_pair(k)
        a = base @ A.replace_mapper(prompt_tokens(s), prompt_tokens(t), MAX_NUM_WORDS).double()
        b = torch.einsum('hpw,bwn->bhpn', base, get_replacement_mapper([s, t], tokenizer))[0]
        worst = max(worst, rel(a, b))
    return worst


def test_replace_matches_the_official_mapper_for_equal_token_counts():
    """The Replace mapper W equals the official get_replacement_mapper exactly on 100 word swaps of equal token
    counts (one-token and three-token words); a planted mutation (a word's tokens mapped in reverse) is caught."""
    MUT.clear()
    pairs = replace_pairs(100)
    for s, t in pairs:
        w = A.replace_mapper(prompt_tokens(s), prompt_tokens(t), MAX_NUM_WORDS).double()
        assert torch.equal(w, get_replacement_mapper([s, t], tokenizer)[0]), (s, t)
    assert replace_max_rel(pairs) <= TOL
    MUT.add("reversed")
    moved = replace_max_rel(pairs)
    MUT.clear()
    assert moved > 1000 * TOL, moved
    print(f"replace, equal token counts: exact; mutation 'reversed' {moved:.3f}")


def test_replace_with_unequal_token_counts_is_the_documented_difference():
    """Deliberate: a swapped word of another token count takes the mean of the source word's maps and the words
    after it stay aligned; the official mapper gives Σ(source tokens)/len(target tokens) and maps the positions after
    the last swapped word j -> j. Shown on 'a cat on the mat' -> 'a sitting on the mat' (1 -> 3 tokens)."""
    s, t = "a cat on the mat", "a sitting on the mat"
    src, tgt = prompt_tokens(s), prompt_tokens(t)
    w = A.replace_mapper(src, tgt, MAX_NUM_WORDS).double()
    off = get_replacement_mapper([s, t], tokenizer)[0]
    assert [w[2, j].item() for j in (2, 3, 4)] == [1.0, 1.0, 1.0]              # pack: the mean of one token
    assert [off[2, j].item() for j in (2, 3, 4)] == [1 / 3] * 3                # official: 1/len(target)
    for k in (2, 3, 4):  # on, the, mat: the pack keeps each word on its source word; the official maps j -> j
        (i_src,), (j_tgt,) = src.spans[k], tgt.spans[k]
        assert w[i_src, j_tgt] == 1 and off[j_tgt, j_tgt] == 1 and j_tgt - i_src == 2
    sizes = [replace_max_rel([p]) for p in replace_pairs(50, equal=False)]
    assert min(sizes) > 0.05  # a real difference on every such pair (see the docs for the figure)
    print(f"replace, unequal token counts: rel diff of the target maps {min(sizes):.3f} to {max(sizes):.3f}")


# -- the whole edit ----------------------------------------------------------------------------------------------------

CASES = {
    # Refine + reweight + LocalBlend + P2Plus: words inserted, a two-token word, repeated words
    "refine": dict(source="a cat on the mat", target="a red cat sitting on the mat", mode="refine", tau_c=0.55,
                   tau_s=0.6, tau_u=0.5, reweight=(["sitting"], 3.0), blend=(["cat"], ["cat", "sitting"])),
    # Replace (equal token counts) + reweight + LocalBlend
    "replace": dict(source="a cat on the mat", target="a dog on the mat", mode="replace", tau_c=0.55, tau_s=0.6,
                    tau_u=0.3, reweight=(["dog"], 2.0), blend=(["cat"], ["dog"])),
}


def run_official(net, z_T, c):
    controller = make_controller([c["source"], c["target"]], c["mode"] == "replace", {"default_": c["tau_c"]},
                                 c["tau_s"], c["tau_u"], blend_words=[c["blend"][0], c["blend"][1]],
                                 equilizer_params={"words": c["reweight"][0], "values": [c["reweight"][1]]})
    out = official_edit(net, [c["source"], c["target"]], controller, z_T)
    return out, controller.local_blend.masks


@pytest.mark.parametrize("case", list(CASES))
def test_the_edit_with_local_blend_matches_the_official_loop(case):
    """The edited and the reconstructed latents after T = 10 steps of the whole edit (P2PEdit's cross/self/uncond
    self-attention on their schedules, reweighting, LocalBlend on the running sum since step 0) against the official
    loop; and the masks step by step. Planted mutations: LocalBlend on the current step's maps (the pack before item
    10), the cross schedule int(τ_c·T), the equalizer after τ_c; for Refine also the uncond self-attention one step
    longer, ``<`` for the self-attention size rule, LocalBlend one step late and the padding shifted."""
    c = CASES[case]
    net = ToyUNet(seed=3)
    z_T = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5), dtype=F64)
    MUT.clear()
    ref, ref_masks = run_official(net, z_T, c)
    kw = {k: c[k] for k in ("mode", "tau_c", "tau_s", "tau_u", "reweight", "blend")}
    out, masks = pack_edit(net, c["source"], c["target"], z_T, **kw)
    err = rel(out, ref)
    assert err <= TOL, err
    assert len(masks) == len(ref_masks) == 10 - int(0.2 * 10)
    assert all(torch.equal(m[0, 0], r[0, 0]) for m, r in zip(masks, ref_masks))
    assert 0 < float(masks[-1].mean()) < 1  # the mask selects a real part of the latent
    mutations = ["blend_current_step", "cross_T", "eq_always"]   # Replace: those of its own path
    if case == "refine":
        mutations += ["uncond_T", "self_lt", "blend_start", "pad_shift"]
    moved, cur_masks = {}, None
    for mut in mutations:
        MUT.clear()
        MUT.add(mut)
        mutated, mutated_masks = run_official(net, z_T, c)
        moved[mut] = rel(out, mutated)
        assert moved[mut] > 1000 * TOL, (mut, moved[mut])
        if mut == "blend_current_step":
            cur_masks = mutated_masks
    MUT.clear()
    frac = [float((m[0, 0] != r[0, 0]).double().mean()) for m, r in zip(cur_masks, ref_masks)]
    print(f"{case}: rel diff {err:.2e}; mutations {moved}; current-step masks differ on "
          f"{min(frac):.0%}..{max(frac):.0%} of the latent")


def test_local_blend_mask_of_the_running_sum_matches_the_official_on_random_stores():
    """LocalBlend alone, over 30 steps of random attention stores with SD1.5's layer layout (2 + 3 quarter-
    resolution cross layers among the stored ones): the pack's masks equal the official masks at every step."""
    global NUM_DDIM_STEPS
    T, q = 30, LATENT // 4
    g = torch.Generator().manual_seed(9)
    prompts = ["a cat on the mat", "a dog on the mat"]
    saved, NUM_DDIM_STEPS = NUM_DDIM_STEPS, T
    try:
        MUT.clear()
        official = LocalBlend(prompts, [["cat"], ["dog"]])
        pack = A.LocalBlend([A.word_positions(prompt_tokens(p), [w]) for p, w in zip(prompts, ("cat", "dog"))],
                            int(0.2 * T), 0.3)
        store = {}
        x = torch.randn(2, 4, LATENT, LATENT, generator=g, dtype=F64)
        for i in range(T):
            def maps(n):  # [rows·heads, n, 77], rows-major as ca_forward's batch
                return torch.softmax(torch.randn(2 * HEADS, n, MAX_NUM_WORDS, generator=g, dtype=F64) * 3, -1)
            step = {"down_cross": [maps((2 * q) ** 2), maps((2 * q) ** 2), maps(q * q), maps(q * q)],
                    "up_cross": [maps(q * q), maps(q * q), maps(q * q), maps((2 * q) ** 2)]}
            store = step if not store else {k: [a + b for a, b in zip(store[k], step[k])] for k in store}
            ref = official(x.clone(), store)
            quarter = step["down_cross"][2:4] + step["up_cross"][:3]
            got = pack(i, [(("l", k), m.reshape(2, HEADS, q * q, MAX_NUM_WORDS)) for k, m in enumerate(quarter)],
                       x.clone())
            assert rel(got, ref) <= TOL
        assert len(official.masks) == T - int(0.2 * T)
        assert torch.equal(pack.mask[0, 0], official.masks[-1][0, 0])
    finally:
        NUM_DDIM_STEPS = saved
