"""hooks/attention.py: row routing in every cond/uncond layout, explicit attention equal to the fused kernel, P2P's
token mappers and schedules, P2Plus's uncond self-attention swap, map capture, LocalBlend, the value FiLM and the
null-text context patches (issue 13, spec stylediffusion.md §3 and §8)."""
import pytest
import torch

from invedit.hooks import attention as A

F64 = torch.float64


def qkv(b=4, n=16, m=7, heads=2, d=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, x, heads * d, generator=g, dtype=dtype) for x in (n, m, m)]


def opts(cond_or_uncond, hw=(16, 16), **kw):
    return dict(n_heads=2, cond_or_uncond=cond_or_uncond, original_shape=[2, 4, *hw], block=("input", 1),
                block_index=0, **kw)


def test_rows_are_found_in_every_layout():
    assert A.row_labels([0, 1], 4) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert A.row_labels([1, 0], 4) == [(1, 0), (1, 1), (0, 0), (0, 1)]
    assert A.row_labels([0], 2) == [(0, 0), (0, 1)]
    assert A.row_labels([1], 2) == [(1, 0), (1, 1)]
    assert A.row_labels(None, 2) == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="does not split"):
        A.row_labels([0, 1], 3)


def test_the_query_divisor_reads_the_latent_size():
    assert A.query_divisor(opts([0], hw=(64, 64)), 64 * 64) == 1
    assert A.query_divisor(opts([0], hw=(64, 64)), 16 * 16) == 4
    assert A.query_divisor(opts([0], hw=(128, 96)), 32 * 24) == 4  # SDXL-like, not square
    assert A.query_divisor({}, 100) == 1


def test_explicit_attention_equals_the_fused_kernel_and_untouched_layers_run_the_fused_one():
    q, k, v = qkv()
    ref = A.sdpa(q, k, v, 2)
    explicit = A.attend(A.attention_probs(q, k, 2), v, 2)
    torch.testing.assert_close(explicit, ref, rtol=1e-5, atol=1e-6)  # fp32 softmax against a float64 kernel
    calls = []

    def fused(q, k, v, heads, **kw):
        calls.append(heads)
        return A.sdpa(q, k, v, heads)
    out = A.replace_patch(A.CROSS, [A.Controller()], lambda o: 0, fused)(q, k, v, opts([0, 1]))
    assert calls == [2] and torch.equal(out, ref)


def test_the_step_is_the_nearest_sigma_of_the_grid():
    grid = torch.tensor([14.6, 5.0, 1.0, 0.03])
    assert [A.nearest_step(s, grid) for s in grid.tolist()] == [0, 1, 2, 3]
    assert A.nearest_step(0.0, grid) == 3 and A.nearest_step(100.0, grid) == 0
    assert A.nearest_step((5.0 * 1.0) ** 0.5 * 1.01, grid) == 1 and A.nearest_step((5.0 * 1.0) ** 0.5 * 0.99, grid) == 2
    step = A.grid_stepper(grid)
    assert step({"sigmas": torch.tensor([1.0])}) == 2 and step({}) is None


def test_interpolated_step_matching_blends_the_neighbouring_steps():
    grid = torch.tensor([10.0, 1.0, 0.1, 0.1], dtype=F64)
    assert [A.grid_position(s, grid) for s in (10.0, 1.0, 0.1)] == [0.0, 1.0, 2.0]
    assert A.grid_position(float(torch.tensor(0.1, dtype=torch.float32)), grid) == 2.0  # a float32 σ of the grid
    assert A.grid_position(10.0 ** 0.5, grid) == pytest.approx(0.5) and A.grid_position(100.0, grid) == 0.0
    assert A.grid_position(0.01, grid) == 3.0
    scale = torch.stack([torch.full((2, 3), float(k)) for k in range(4)])
    a, _ = A.baked(scale, scale)(0.25)
    assert torch.allclose(a, torch.full((2, 3), 0.25)) and torch.equal(A.baked(scale, scale)(2)[0], scale[2])
    assert torch.equal(A.per_step(scale)(9), scale[3])
    step = A.grid_stepper(grid, "interpolate")
    assert step({"sigmas": torch.tensor([10.0 ** 0.5])}) == pytest.approx(0.5)
    assert A.grid_stepper(grid)({"sigmas": torch.tensor([10.0 ** 0.4])}) == 1
    with pytest.raises(ValueError, match="step matching"):
        A.grid_stepper(grid, "linear")


def tokens(words, lengths=None):
    """PromptTokens with words of ``lengths`` tokens each (1 by default), BOS at 0."""
    lengths = lengths or [1] * len(words)
    spans, pos = [], 1
    for n in lengths:
        spans.append(tuple(range(pos, pos + n)))
        pos += n
    return A.PromptTokens(tuple(words), tuple(spans), pos)


def test_replace_maps_word_for_word_and_averages_a_word_of_other_length():
    L = 10
    src, tgt = tokens(["a", "red", "circle"]), tokens(["a", "blue", "circle"])
    w = A.replace_mapper(src, tgt, L)
    assert torch.equal(w, torch.eye(L))  # same token layout: the maps carry over unchanged
    src2 = tokens(["a", "crimson", "circle"], [1, 2, 1])  # "crimson" two tokens
    w = A.replace_mapper(src2, tgt, L)
    assert w[2, 2] == 0.5 and w[3, 2] == 0.5  # blue's map = mean of crimson's two
    assert w[4, 3] == 1  # circle follows
    assert w[5, 4] == 1 and w[9, 9] == 1  # end token and padding, in order, clipped
    with pytest.raises(ValueError, match="same number of words|use Refine"):
        A.replace_mapper(tokens(["a", "circle"]), tgt, L)


def test_refine_aligns_the_common_words_and_leaves_inserted_ones_their_own_maps():
    assert A.align_words(["a", "circle"], ["a", "blue", "circle"]) == [0, None, 1]
    assert A.align_words(["a", "red", "circle"], ["a", "circle", "red"]) == [0, 2, None]
    src, tgt = tokens(["a", "circle"]), tokens(["a", "blue", "circle"])
    w, alpha = A.refine_mapper(src, tgt, 8)
    assert alpha.tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    assert w[2, 3] == 1 and w[3, 4] == 1 and w[:, 2].sum() == 0  # circle -> circle, end -> end, blue from nothing


def test_refine_maps_the_padding_after_the_targets_end_to_the_same_position():
    """Issue 24, item 11: the official get_refinement_mapper maps target position j after the end token to source
    position j (identity), whatever the source holds there; the end token to the end token."""
    src, tgt = tokens(["a", "circle"]), tokens(["a", "big", "blue", "circle"])  # end tokens at 3 and 5
    w, alpha = A.refine_mapper(src, tgt, 12)
    assert w[3, 5] == 1 and alpha[5] == 1                        # end -> end
    for j in range(6, 12):
        assert w[j, j] == 1 and w[:, j].sum() == 1 and alpha[j] == 1, j
    w, alpha = A.refine_mapper(tgt, src, 12)                       # words dropped: the same rule
    assert w[5, 3] == 1 and all(w[j, j] == 1 for j in range(4, 12))


def test_refine_breaks_ties_as_the_official_global_alignment():
    """Issue 24, item 12: 'cat cat on on the' -> 'dog cat on' takes cat and on from the first copies (source tokens
    [None, 1, 3] for the target's tokens 1 to 3), as seq_aligner's traceback (left, then up, then diagonal)."""
    src, tgt = tokens(["cat", "cat", "on", "on", "the"]), tokens(["dog", "cat", "on"])
    w, alpha = A.refine_mapper(src, tgt, 10)
    assert [int(w[:, j].argmax()) if alpha[j] else None for j in (1, 2, 3)] == [None, 1, 3]
    assert A.align_words("a b a".split(), ["a"]) == [0] and A.align_words(["a", "a"], ["a"]) == [0]
    assert A.align_words("x a y a".split(), ["a", "z"]) == [1, None]


def test_refine_aligns_tokens_when_the_ids_are_known():
    """Words that share a token (two-token words with the same first piece) align token by token, as the official
    code aligns ``tokenizer.encode``."""
    src = A.PromptTokens(("a", "crimson"), ((1,), (2, 3)), 4, (10, 20, 21))
    tgt = A.PromptTokens(("a", "cricket"), ((1,), (2, 3)), 4, (10, 20, 22))
    w, alpha = A.refine_mapper(src, tgt, 6)
    assert alpha[:6].tolist() == [1, 1, 1, 0, 1, 1] and w[2, 2] == 1  # the shared piece keeps its map
    with pytest.raises(ValueError, match="token ids"):
        A.PromptTokens(("a",), ((1,),), 2, (1, 2)).sequence()


def test_local_blend_masks_the_running_sum_of_the_maps_since_step_0():
    """Issue 24, item 10: the mask after step i comes from the sum of the blend layers' maps of steps 0..i (the
    official AttentionStore's attention_store), not from step i's alone; nothing is blended before ``start``."""
    def maps(q):  # one layer: the blend token (2) attends to query q of a 4x4 grid, 2 rows, 2 heads
        p = torch.zeros(2, 2, 16, 7)
        p[:, :, q, 2] = 1.0
        return [(("input", 1, 0), p)]
    x = torch.randn(2, 4, 8, 8, dtype=F64)
    lb = A.LocalBlend([[2], [2]], start=1, threshold=0.3)
    assert torch.equal(lb(0, maps(0), x), x) and lb.mask is None    # before start: no blend, but summed
    out = lb(1, maps(15), x)
    want = A.blend_mask([(("input", 1, 0), maps(0)[0][1] + maps(15)[0][1])], [[2], [2]], (8, 8))[:1]
    assert torch.equal(lb.mask, want)
    assert lb.mask[0, 0, 0, 0] == 1 and lb.mask[0, 0, 7, 7] == 1    # both steps' places
    assert lb.mask.sum() == 2 * 16                                 # (2x2 pooled corner cells, x2 upsampled) x 2
    assert torch.equal(out, A.local_blend(x, want))
    assert len(lb.total) == 1 and lb.total[0][1].shape == (2, 1, 16, 7)  # one running sum per layer, heads summed
    with pytest.raises(ValueError, match="no attention maps for step 2"):
        lb(2, [], x)


def test_blend_words_are_every_occurrence_of_the_word():
    p = tokens(["a", "cat", "and", "a", "cat"], [1, 2, 1, 1, 2])
    assert A.word_positions(p, ["cat"]) == [2, 3, 6, 7]
    with pytest.raises(ValueError, match="LocalBlend words: 'dog' is not in the prompt, whose words are 'a cat and a "
                                         "cat'; type words of that prompt"):
        A.word_positions(p, ["dog"])


def test_reweight_scales_the_chosen_target_tokens():
    tgt = tokens(["a", "blue", "circle"], [1, 2, 1])
    c = A.reweight_vector(tgt, ["blue"], 3.0, 8)
    assert c.tolist() == [1, 1, 3, 3, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="reweight_words: .red. is not in the target prompt, whose words are .a blue circle."):
        A.reweight_vector(tgt, ["red"], 2.0, 8)


def test_the_schedule_rounds_as_the_official_code():
    s = A.P2PSchedule(steps=10, tau_c=0.6, tau_s=0.5, tau_u=0.3)
    assert [s.cross(i) for i in range(10)] == [i < 6 for i in range(10)]  # int(0.6 * 11) = 6
    assert [s.self_cond(i) for i in range(10)] == [i < 5 for i in range(10)]
    assert [s.self_uncond(i) for i in range(10)] == [i < 3 for i in range(10)]
    assert not s.cross(None)


def p2p(tau_u=0.5, steps=4, L=7, **kw):
    return A.P2PEdit(A.P2PSchedule(steps, tau_c=1.0, tau_s=1.0, tau_u=tau_u, **kw), torch.eye(L))


def run_patch(kind, ctl, q, k, v, layout, step, hw=(16, 16)):
    return A.replace_patch(kind, [ctl], lambda o: step)(q, k, v, opts(layout, hw=hw))


def test_p2p_with_equal_prompts_changes_nothing_and_never_touches_the_source_row():
    q, k, v = qkv(b=4)
    q[1], k[1], v[1] = q[0], k[0], v[0]  # cond rows: source == target
    q[3], k[3], v[3] = q[2], k[2], v[2]
    for kind in (A.CROSS, A.SELF):
        out = run_patch(kind, p2p(), q, k, v, [0, 1], 0, hw=(8, 8))  # 16 queries of an 8x8 latent: divisor 1
        assert torch.equal(out, A.sdpa(q, k, v, 2))  # bit for bit: no row's probabilities changed
    q, k, v = qkv(b=4, seed=3)
    out = run_patch(A.CROSS, p2p(), q, k, v, [0, 1], 0)
    assert torch.equal(out[0], A.sdpa(q, k, v, 2)[0]) and torch.equal(out[2:], A.sdpa(q, k, v, 2)[2:])
    # the target row now attends with the source's maps to its own values
    want = A.attend(A.attention_probs(q[:1], k[:1], 2), v[1:2], 2)
    torch.testing.assert_close(out[1:2], want, rtol=1e-6, atol=1e-7)


def test_self_attention_is_swapped_only_in_coarse_layers():
    q, k, v = qkv(b=2, n=16, m=16)
    ctl = p2p(tau_u=0.0)
    full = run_patch(A.SELF, ctl, q, k, v, [0], 0, hw=(4, 4))   # 16 queries of a 4x4 latent: full resolution
    assert torch.equal(full, A.sdpa(q, k, v, 2))
    half = run_patch(A.SELF, ctl, q, k, v, [0], 0, hw=(8, 8))   # divisor 2: swapped
    want = A.attend(A.attention_probs(q[:1], k[:1], 2), v[1:2], 2)
    torch.testing.assert_close(half[1:2], want, rtol=1e-6, atol=1e-7)


def test_p2plus_swaps_uncond_self_attention_for_the_first_tau_u_steps_only():
    q, k, v = qkv(b=4, n=16, m=16, seed=5)
    ctl = A.P2PEdit(A.P2PSchedule(4, tau_c=0.0, tau_s=0.0, tau_u=0.5), torch.eye(16))
    probs_uncond_src = A.attention_probs(q[2:3], k[2:3], 2)
    for step in range(4):
        out = run_patch(A.SELF, ctl, q, k, v, [0, 1], step, hw=(8, 8))
        ref = A.sdpa(q, k, v, 2)
        swapped = A.attend(probs_uncond_src, v[3:4], 2)
        if step < 2:  # int(0.5 * 4) = 2
            torch.testing.assert_close(out[3:4], swapped, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(out, ref)
        assert torch.equal(out[:3], ref[:3])  # cond rows and the uncond source: the fused kernel's


def test_the_edit_is_the_same_in_every_row_layout():
    q, k, v = qkv(b=4, seed=7)
    ctl = A.P2PEdit(A.P2PSchedule(4, tau_c=1.0, tau_s=1.0, tau_u=1.0), torch.eye(7))
    for kind in (A.CROSS, A.SELF):
        both = run_patch(kind, ctl, q, k, v, [0, 1], 1)
        flipped = run_patch(kind, ctl, *(t[[2, 3, 0, 1]] for t in (q, k, v)), [1, 0], 1)[[2, 3, 0, 1]]
        cond = run_patch(kind, ctl, q[:2], k[:2], v[:2], [0], 1)
        uncond = run_patch(kind, ctl, q[2:], k[2:], v[2:], [1], 1)
        assert torch.equal(both, flipped)
        assert torch.equal(both, torch.cat([cond, uncond]))


def test_capture_records_the_cond_rows_of_the_chosen_layers():
    cap = A.CaptureMaps(divisors=(4,))
    q, k, v = qkv(b=4, n=16)
    out = run_patch(A.CROSS, cap, q, k, v, [1, 0], 2, hw=(16, 16))  # 16 queries of 16x16: divisor 4
    assert torch.equal(out, A.sdpa(q, k, v, 2))  # recording changes nothing
    run_patch(A.CROSS, cap, q, k, v, [1, 0], 2, hw=(4, 4))    # divisor 1: not recorded
    run_patch(A.SELF, cap, q, k, v, [1, 0], 2, hw=(16, 16))   # self-attention: not recorded
    (layer, p), = cap.maps[2]
    assert layer == ("input", 1, 0) and p.shape == (2, 2, 16, 7)
    torch.testing.assert_close(p, A.attention_probs(q[2:], k[2:], 2))
    assert A.map_loss(cap.maps[2], cap.maps[2]) == 0
    with pytest.raises(ValueError, match="layers differ"):
        A.map_loss(cap.maps[2], cap.maps[2] * 2)


def test_local_blend_keeps_the_source_outside_the_mask():
    x = torch.randn(2, 4, 8, 8, dtype=F64)
    assert torch.equal(A.local_blend(x, torch.ones(2, 1, 8, 8)), x)
    out = A.local_blend(x, torch.zeros(2, 1, 8, 8))
    assert torch.equal(out[1], x[0]) and torch.equal(out[0], x[0])
    probs = torch.zeros(2, 2, 16, 7)
    probs[:, :, 5, 2] = 1.0  # the blend word (token 2) attends to query 5 (row 1, col 1 of a 4x4 grid)
    mask = A.blend_mask([(("input", 1, 0), probs)], [[2], [2]], (8, 8), threshold=0.3)
    assert mask.shape == (2, 1, 8, 8) and torch.equal(mask[0], mask[1])
    assert mask[0, 0, :6, :6].all() and mask[0, 0].sum() == 36  # 3x3 pooled around (1,1), x2 upsampled
    assert A.blend_mask([(("input", 1, 0), probs)], [[], []], (8, 8)).sum() == 0


def test_value_film_is_exactly_the_identity_at_one_and_zero_and_leaves_keys_and_uncond_rows():
    T, L, D = 3, 7, 8
    ctx = torch.randn(4, L, D)
    ones, zeros = torch.ones(T, L, D), torch.zeros(T, L, D)
    o = opts([0, 1], sigmas=torch.tensor([1.0]))
    n = torch.randn(4, 16, D)
    _, c, v = A.value_film(A.baked(ones, zeros), lambda e: 1)(n, ctx, ctx, o)
    assert torch.equal(v, ctx) and c is ctx
    scale, shift = torch.randn(T, L, D), torch.randn(T, L, D)
    _, c, v = A.value_film(A.baked(scale, shift), lambda e: 1)(n, ctx, ctx, o)
    assert c is ctx  # keys keep the text
    assert torch.equal(v[:2], ctx[:2] * scale[1] + shift[1]) and torch.equal(v[2:], ctx[2:])
    _, _, v0 = A.value_film(A.baked(scale, shift), lambda e: 1, strength=0.0)(n, ctx, ctx, o)
    assert torch.equal(v0, ctx)
    _, _, v_off = A.value_film(A.baked(scale, shift), lambda e: 1, active=lambda i, row: i < 1)(n, ctx, ctx, o)
    assert torch.equal(v_off, ctx)  # τ_v gate closed at step 1
    _, _, v_row = A.value_film(A.baked(scale, shift), lambda e: 1, active=lambda i, row: row == 0)(n, ctx, ctx, o)
    assert torch.equal(v_row[0], ctx[0] * scale[1] + shift[1]) and torch.equal(v_row[1], ctx[1])  # source row only
    long = torch.randn(2, 2 * L, D)  # a 154-token prompt: A, B tiled per 77-token chunk
    _, _, vl = A.value_film(A.baked(scale, shift), lambda e: 0)(n[:2], long, long, opts([0]))
    assert torch.equal(vl[:, L:], long[:, L:] * scale[0] + shift[0])
    a = torch.ones(L, D, requires_grad=True)  # live values (training): gradients reach them
    _, _, vg = A.value_film(lambda i: (a, torch.zeros(L, D)), lambda e: 0)(n, ctx, ctx, o)
    vg.sum().backward()
    assert torch.equal(a.grad, ctx[:2].sum(0))


def test_null_text_rows_take_the_step_embedding_for_keys_and_values():
    T, L, D = 3, 7, 8
    emb = torch.randn(T, L, D)
    ctx = torch.randn(4, L, D)
    before = ctx.clone()
    _, c, v = A.context_rows(A.per_step(emb), lambda e: 2)(None, ctx, ctx, opts([1, 0]))
    assert torch.equal(c[:2], emb[2].expand(2, L, D)) and torch.equal(c[2:], ctx[2:]) and v is c
    assert torch.equal(ctx, before)  # the caller's tensor is not written
