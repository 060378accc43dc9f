"""generation: batched equals unbatched, steering reaches every decoded token."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer, add_to_resid_pre
from steerpipe.lm.prefill import left_pad

PROMPTS = [[1, 30, 500, 7000, 12], [1, 99, 4], [1, 5, 6, 7, 8, 9, 10, 11]]
GREEDY = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}


@contextmanager
def _forward_shapes(model) -> Iterator[list[tuple[int, int]]]:
    """Records (rows, tokens) of every forward call of the model's first decoder layer."""
    shapes: list[tuple[int, int]] = []
    layer = model.get_decoder().layers[0]
    handle = layer.register_forward_pre_hook(
        lambda m, a, k: shapes.append(tuple((a[0] if a else k["hidden_states"]).shape[:2])),
        with_kwargs=True,
    )
    try:
        yield shapes
    finally:
        handle.remove()


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]]
    assert mask.tolist() == [[1, 1], [0, 1]]


@pytest.mark.device
def test_batched_greedy_equals_unbatched(model_on_device) -> None:
    batched = generate(model_on_device, PROMPTS, batch_size=8, **GREEDY)
    alone = [generate(model_on_device, [p], batch_size=1, **GREEDY)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(t) == 6 or t[-1] == 2 for t in batched)


def _no_cache_greedy(model, prompt, layer, vec, n):
    """Reference: a full forward per token with the hook, no KV cache."""
    ids = list(prompt)
    with add_to_resid_pre(model, {layer: vec}):
        for _ in range(n):
            logits = model(torch.tensor([ids], device=model.device), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.device
def test_steering_acts_on_every_decoded_token(model_on_device) -> None:
    model = model_on_device
    vec = 4 * torch.randn(64, generator=torch.Generator().manual_seed(3))
    steered = generate(model, PROMPTS, steers=[Steer(1, vec)] * 3, batch_size=8, **GREEDY)
    for prompt, got in zip(PROMPTS, steered, strict=True):
        want = _no_cache_greedy(model, prompt, 1, vec, 6)
        assert got == want[: len(got)]
    assert steered != generate(model, PROMPTS, batch_size=8, **GREEDY)


def test_hook_sees_each_decode_step(tiny_model) -> None:
    with _forward_shapes(tiny_model) as shapes:
        generate(tiny_model, [PROMPTS[0]], steers=[Steer(0, torch.ones(64))], **GREEDY)
    lengths = [tokens for _, tokens in shapes]
    # prefill over the prompt, then one call per new token with the KV cache
    assert lengths[0] == len(PROMPTS[0])
    assert lengths[1:] == [1] * (len(lengths) - 1) and len(lengths) >= 5


def test_control_rows_in_a_mixed_batch_are_unsteered(tiny_model) -> None:
    vec = 4 * torch.ones(64)
    mixed = generate(tiny_model, PROMPTS, steers=[None, Steer(2, vec), None], **GREEDY)
    plain = generate(tiny_model, PROMPTS, **GREEDY)
    assert mixed[0] == plain[0] and mixed[2] == plain[2]


def test_sampling_is_reproducible(tiny_model) -> None:
    kwargs = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.95, "progress": False}
    a = generate(tiny_model, PROMPTS * 2, seed=5, **kwargs)
    b = generate(tiny_model, PROMPTS * 2, seed=5, **kwargs)
    c = generate(tiny_model, PROMPTS * 2, seed=6, **kwargs)
    assert a == b
    assert a != c


def test_batch_hook_is_told_the_rows(tiny_model) -> None:
    seen: list[list[int]] = []

    @contextmanager
    def hook(rows):
        seen.append(rows)
        yield

    generate(tiny_model, PROMPTS, batch_size=2, batch_hook=hook, **GREEDY)
    # sorted by length: rows 1 (3 tokens) and 0 (5), then row 2 (8)
    assert seen == [[1, 0], [2]]


@pytest.mark.device
def test_shared_prefill_gives_the_same_greedy_tokens(model_on_device) -> None:
    vec = 4 * torch.randn(64, generator=torch.Generator().manual_seed(5))
    prompts = [p for p in PROMPTS for _ in range(3)] * 2
    steers = [None] * 9 + [Steer(2, vec)] * 9
    shared = generate(model_on_device, prompts, steers=steers, batch_size=8, **GREEDY)
    plain = generate(
        model_on_device, prompts, steers=steers, batch_size=8, share_prefill=False, **GREEDY
    )
    assert shared == plain
    assert shared[0] != shared[9]  # the steered samples differ from the control ones


def test_no_deprecation_warnings_from_our_calls(tiny_model) -> None:
    """transformers deprecates ``past_key_values`` for ``cache`` (in generate and forward):
    the shared prefill and the sampled decoding ask for nothing deprecated."""
    prompts = [p for p in PROMPTS for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        out = generate(tiny_model, prompts, seed=1, **{**GREEDY, "temperature": 0.7})
    assert len(out) == len(prompts)


def test_shared_prefill_cache_gives_the_first_new_token_logits(tiny_model) -> None:
    """The same distribution at the first new token: the expanded prefill cache plus the last
    prompt token gives the logits of a full forward over each prompt, steered or not."""
    from steerpipe.lm.cache import GrowingCache
    from steerpipe.lm.hooks import batch_deltas
    from steerpipe.lm.prefill import prefill
    from steerpipe.lm.shared_layers import steering

    vec = 4 * torch.randn(64, generator=torch.Generator().manual_seed(6))
    steers = [None, Steer(1, vec), Steer(1, vec)]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[2]]
    ids, mask = left_pad(prompts, pad_id=2)
    first = [0, 1, 2]
    cache = GrowingCache(tiny_model.config, capacity=ids.shape[1])
    prefill(tiny_model, ids[:, :-1], mask[:, :-1], *steering(tiny_model, steers), cache)
    expand = torch.tensor([0, 0, 1, 2])  # row 0 shared by two samples
    cache.batch_select_indices(expand)
    positions = (mask.cumsum(-1) - 1)[expand, -1:]
    with (
        torch.no_grad(),
        add_to_resid_pre(tiny_model, batch_deltas([steers[i] for i in expand], 64)),
    ):
        got = tiny_model(
            input_ids=ids[expand, -1:],
            attention_mask=mask[expand],
            position_ids=positions,
            cache=cache,
        ).logits[:, -1]
    for row, i in enumerate(expand.tolist()):
        deltas = {} if steers[i] is None else {1: steers[i].vector[None]}
        with torch.no_grad(), add_to_resid_pre(tiny_model, deltas):
            want = tiny_model(torch.tensor([prompts[first[i]]])).logits[0, -1]
        torch.testing.assert_close(got[row], want, atol=1e-4, rtol=1e-4)


def test_samples_of_a_prompt_share_one_prefill(tiny_model) -> None:
    with _forward_shapes(tiny_model) as shapes:
        generate(tiny_model, [PROMPTS[0]] * 5, batch_size=8, **GREEDY)
    lengths = [rows for rows, _ in shapes]
    assert lengths[0] == 1  # the prefill runs on one row
    assert set(lengths[1:]) == {5}  # then five samples decode from copies of its cache


def test_out_of_memory_splits_the_batch(tiny_model, monkeypatch) -> None:
    from steerpipe.lm import generation

    prompts = [p for p in PROMPTS for _ in range(2)]
    want = generate(tiny_model, prompts, batch_size=8, share_prefill=False, **GREEDY)
    real = generation._decode
    sizes: list[int] = []

    def small_memory(model, ids, *args, **kwargs):
        sizes.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(generation, "_decode", small_memory)
    got = generate(tiny_model, prompts, batch_size=8, share_prefill=False, **GREEDY)
    assert got == want
    # 6 fails, then 3 fails, and every later batch keeps the size that fit
    assert sizes == [6, 3, 1, 1, 1, 1, 1, 1]

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(generation, "_decode", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        generate(tiny_model, [PROMPTS[0]], **GREEDY)  # one row cannot be split


def _cut(tokens: list[int], eos: int | list[int]) -> list[int]:
    ends = [eos] if isinstance(eos, int) else eos
    for j, t in enumerate(tokens):
        if t in ends:
            return tokens[: j + 1]
    return tokens


# sampled, with steered and control rows, so that the noise and the steering of the rows left
# are carried over when the finished ones are dropped
ENDING = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.95, "seed": 5, "progress": False}
ENDING_PROMPTS = [p for p in PROMPTS for _ in range(6)]
ENDING_STEERS = [None, Steer(1, 3 * torch.ones(64)), None] * 6


def _endless_and_eos(model: torch.nn.Module) -> tuple[list[list[int]], list[int]]:
    """The 18 ending rows' 12 tokens with no EOS, and EOS ids that half the rows write at
    their second to fourth token."""
    endless = generate(model, ENDING_PROMPTS, steers=ENDING_STEERS, eos_ids=[], **ENDING)
    assert all(len(t) == 12 for t in endless)
    return endless, [endless[i][1 + i % 3] for i in range(0, len(ENDING_PROMPTS), 2)]


def test_finished_rows_leave_the_batch_and_the_rest_keep_their_tokens(tiny_model) -> None:
    prompts, steers, kwargs = ENDING_PROMPTS, ENDING_STEERS, ENDING
    endless, eos = _endless_and_eos(tiny_model)
    with _forward_shapes(tiny_model) as shapes:
        got = generate(tiny_model, prompts, steers=steers, eos_ids=eos, batch_size=32, **kwargs)
    sizes = [rows for rows, _ in shapes]
    assert got == [_cut(row, eos) for row in endless]
    assert sum(len(row) < 12 for row in got) >= 9
    # the prefill of the 6 (prompt, vector) groups: the plain model on the 3 prompts, then the
    # 3 steered groups from layer 1 (shared_layers.py); then 18 rows, fewer once some have ended
    assert sizes[:3] == [3, 3, 18]
    assert min(sizes[1:]) < 18


def test_log_probabilities_are_computed_for_the_unsteered_rows_only(
    tiny_model, monkeypatch
) -> None:
    """``logprobs`` asks for the unsteered rows' log-probabilities; the float64 log-softmax
    over the vocabulary runs on those rows alone, step by step as rows end, and not at all in
    a batch with none (a steered row's would be the steered model's, which no caller wants)."""
    prompts, steers, kwargs = ENDING_PROMPTS, ENDING_STEERS, ENDING
    endless, eos = _endless_and_eos(tiny_model)
    rows: list[int] = []
    log_softmax = torch.log_softmax

    def counted(x: torch.Tensor, dim: int) -> torch.Tensor:
        if x.dtype == torch.float64:
            rows.append(x.shape[0])
        return log_softmax(x, dim)

    monkeypatch.setattr(torch, "log_softmax", counted)
    plain: dict[int, list[float]] = {}
    got = generate(
        tiny_model, prompts, steers=steers, eos_ids=eos, batch_size=32, logprobs=plain, **kwargs
    )
    assert got == [_cut(row, eos) for row in endless]
    assert sorted(plain) == [i for i, s in enumerate(steers) if s is None]
    assert all(len(plain[i]) == len(got[i]) for i in plain)
    # the 12 unsteered rows at the first step, fewer once some have ended and left the batch
    # (a finished row may stay a few steps, until an eighth of the batch has ended)
    assert rows[0] == 12 and min(rows) < 12 and len(rows) == max(map(len, got))
    steered_only = [Steer(1, 3 * torch.ones(64))] * len(prompts)
    rows.clear()
    plain.clear()
    generate(tiny_model, prompts, steers=steered_only, logprobs=plain, **kwargs)
    assert plain == {} and rows == []


def test_batch_hook_follows_the_rows_left(tiny_model) -> None:
    vecs = 0.5 * torch.randn(len(PROMPTS) * 4, 64, generator=torch.Generator().manual_seed(2))
    prompts = [p for p in PROMPTS for _ in range(4)]
    endless = generate(
        tiny_model, prompts, steers=[Steer(1, v) for v in vecs], eos_ids=[], **GREEDY
    )
    counts: dict[int, int] = {}
    for row in endless:
        for t in set(row[:3]):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (counts[t], -t))
    seen: list[list[int]] = []

    def hook(rows: list[int]):
        seen.append(list(rows))
        return add_to_resid_pre(tiny_model, {1: vecs[rows]})

    got = generate(tiny_model, prompts, batch_hook=hook, eos_ids=[eos], **GREEDY)
    assert got == [_cut(row, eos) for row in endless]
    assert len(seen) > 1 and set(seen[1]) < set(seen[0])  # entered again for the rows left


def test_hooked_rows_of_one_prompt_share_the_layers_below_the_hook(tiny_model) -> None:
    """A ``batch_hook`` that says where it acts (``hook_layers``) lets rows of one prompt share
    the prefill below it; the tokens are those of each row prefilled alone, and ``first_step``
    gets the logits a full forward under the row's hook gives after its prompt."""
    vecs = 3 * torch.randn(6, 64, generator=torch.Generator().manual_seed(8))
    vecs[[0, 3]] = 0  # the unhooked rows
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[2]] * 3
    layers = [None, 2, 2] * 2

    def hook(rows: list[int]):
        return add_to_resid_pre(tiny_model, {2: vecs[rows]})

    want = generate(tiny_model, prompts, batch_hook=hook, **GREEDY)
    first: dict[int, torch.Tensor] = {}

    def record(rows: list[int], logits: torch.Tensor) -> None:
        first.update({i: logits[j] for j, i in enumerate(rows)})

    with _forward_shapes(tiny_model) as shapes:
        got = generate(
            tiny_model, prompts, batch_hook=hook, hook_layers=layers, first_step=record, **GREEDY
        )
    assert got == want
    assert want[1] != want[0] and want[4] != want[3]  # the hook changes what they write
    # the plain model on the 2 prompts (but their last tokens), the 4 hooked rows from layer 2,
    # then the 6 rows decode
    assert shapes[:3] == [(2, 7), (4, 7), (6, 1)]
    for i, prompt in enumerate(prompts):
        with torch.no_grad(), add_to_resid_pre(tiny_model, {2: vecs[i]}):
            logits = tiny_model(torch.tensor([prompt])).logits[0, -1]
        torch.testing.assert_close(first[i], logits, atol=1e-4, rtol=1e-4)


# a solve stage's prompts: one instruction, then problems of different lengths
INSTRUCTION = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]
SOLVE = [INSTRUCTION + tail for tail in ([7, 8, 900], [9, 31], [7, 3, 3, 3, 3])]


def test_prompts_that_begin_alike_run_their_prefix_once(tiny_model) -> None:
    """The instruction every prompt of a batch begins with runs once for the plain model and
    once for each steering layer; each prompt's rest follows it (padding between them). The
    samples are those of every row prefilled alone, control and steered."""
    vec = 3 * torch.randn(64, generator=torch.Generator().manual_seed(9))
    prompts = [p for p in SOLVE for _ in range(2)] * 2
    steers = [None] * 6 + [Steer(2, vec)] * 6
    kwargs = {"max_new_tokens": 5, "temperature": 0.9, "top_p": 0.95, "progress": False}
    alone = generate(tiny_model, prompts, steers=steers, seed=3, share_prefill=False, **kwargs)
    plain: dict[int, list[float]] = {}
    with _forward_shapes(tiny_model) as shapes:
        got = generate(tiny_model, prompts, steers=steers, seed=3, logprobs=plain, **kwargs)
    assert got == alone
    assert got[0] != got[6]  # the vector changes what they write
    # the instruction on one row for the plain model, again inside the shared-layer run, then
    # from layer 2 for the 3 steered groups; then the rests (4 columns, but the last tokens) of
    # the 3 problems, plain, and from layer 2 for the steered groups; then 12 rows decode
    assert shapes[:6] == [(1, 12), (1, 12), (3, 12), (3, 4), (3, 4), (12, 1)]
    # the control rows' log-probabilities are the plain model's after the whole prompt
    for i in plain:
        ids = prompts[i] + got[i]
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0].double(), -1)
        n = len(prompts[i])
        want = [float(logp[n + k - 1, t]) for k, t in enumerate(got[i])]
        assert plain[i] == pytest.approx(want, abs=1e-5)


def test_after_prefix_puts_the_padding_after_the_shared_tokens() -> None:
    from steerpipe.lm.prefill import after_prefix, prefix_length

    rows = [[5, 6, 7, 8], [5, 6, 9], [5, 6, 7]]
    assert prefix_length(rows) == 2 and prefix_length([[1, 2], [1, 2]]) == 2
    ids, mask = after_prefix(rows, 2, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 9], [5, 6, 0, 7]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 0, 1]]


def test_rows_group_by_prompt_and_vector_content() -> None:
    from steerpipe.lm.generation import _groups

    vec = torch.randn(8, dtype=torch.bfloat16)
    steers = [Steer(1, vec), Steer(1, vec.clone()), Steer(2, vec), None, None]
    prompts = [[1, 2, 3]] * 4 + [[1, 2]]
    assert _groups(prompts, steers, 8, share=True) == [[4], [0, 1], [2], [3]]
    assert _groups(prompts, steers, 1, share=True) == [[4], [0], [1], [2], [3]]
    assert _groups(prompts, steers, 8, share=False) == [[4], [0], [1], [2], [3]]
    # prompts of one length: each prompt's groups together, so that a batch holds them
    # (shared_layers.py), in the order the prompts first come
    prompts = [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]]
    assert _groups(prompts, [None, None, steers[0], steers[0]], 8, share=True) == [
        [0],
        [2],
        [1],
        [3],
    ]


@pytest.mark.device
def test_sampled_rows_do_not_depend_on_the_batch(model_on_device) -> None:
    model = model_on_device
    kwargs = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.95, "progress": False}
    prompts = [p for p in PROMPTS for _ in range(3)]
    steers = [None, Steer(1, 3 * torch.ones(64)), None] * 3
    batched = generate(model, prompts, steers=steers, seed=5, batch_size=16, **kwargs)
    small = generate(model, prompts, steers=steers, seed=5, batch_size=2, **kwargs)
    unshared = generate(model, prompts, steers=steers, seed=5, share_prefill=False, **kwargs)
    alone = [
        generate(model, prompts, steers=steers, seed=5, batch_size=1, **kwargs)[i]
        for i in range(len(prompts))
    ]
    assert batched == small == unshared == alone
    # the samples of one prompt (rows 0 and 2 are unsteered copies) still differ
    assert batched[0] != batched[2]


@pytest.mark.device
def test_samples_on_the_device_equal_the_cpu(tiny_model, model_on_device) -> None:
    # the noise is hashed, not drawn from a device's generator: the same seeds sample the same
    # tokens on a GPU as on the CPU (float32 kernels differ by ~1e-6, far from a tie here)
    kwargs = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.95, "progress": False}
    prompts = [p for p in PROMPTS for _ in range(4)]
    steers = [None, Steer(1, 3 * torch.ones(64))] * 6
    cpu = generate(tiny_model, prompts, steers=steers, seed=9, **kwargs)
    assert generate(model_on_device, prompts, steers=steers, seed=9, **kwargs) == cpu
    assert len({tuple(t) for t in cpu}) > 6  # and they are samples, not one greedy answer


def test_sampling_follows_the_top_p_distribution() -> None:
    from tiny import tiny_config
    from transformers import LlamaForCausalLM

    from steerpipe.lm.noise import RowNoise, row_seed

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(vocab_size=16)).eval().requires_grad_(False)
    model.lm_head.weight.mul_(2)  # (tied to the embeddings) peaked: top-p keeps about 7 of 16
    prompt = [1, 5, 9, 3]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([prompt])).logits[0, -1] / 0.7, -1)
    top = probs.sort(descending=True)
    keep = top.indices[: int((top.values.cumsum(0) < 0.8).sum()) + 1]
    want = torch.zeros_like(probs)
    want[keep] = probs[keep] / probs[keep].sum()
    assert 2 < len(keep) < 16
    n = 4000
    firsts = generate(
        model,
        [prompt] * n,
        max_new_tokens=1,
        temperature=0.7,
        top_p=0.8,
        batch_size=n,
        pad_id=0,
        eos_ids=[],
        progress=False,
    )
    counts = torch.bincount(torch.tensor([f[0] for f in firsts]), minlength=16)
    assert set(counts.nonzero().flatten().tolist()) == set(keep.tolist())
    tv = 0.5 * (counts / n - want).abs().sum()
    assert tv < 0.04, tv  # sampling error alone is about 0.015 here
    assert row_seed(0, 1) != row_seed(1, 0)
    noise = RowNoise([row_seed(0, 0)])
    assert torch.isfinite(noise(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 50))).all()


def test_take_packs_groups_up_to_the_limit() -> None:
    from collections import deque

    from steerpipe.lm.generation import _take

    queue = deque([[0, 1], [2], [3, 4, 5, 6, 7], [8]])
    assert _take(queue, 3) == [[0, 1], [2]]
    assert _take(queue, 3) == [[3, 4, 5]]  # a group larger than the limit is cut
    assert _take(queue, 3) == [[6, 7], [8]]
    assert not queue


def test_batches_shrink_to_the_free_memory(tiny_model, monkeypatch) -> None:
    import steerpipe.lm.generation
    from steerpipe.lm.batch_sizes import fit_rows

    prompts = [p for p in PROMPTS for _ in range(4)]
    want = generate(tiny_model, prompts, batch_size=16, **GREEDY)
    sizes: list[int] = []
    real = steerpipe.lm.generation._decode

    def counting(model, ids, *args, **kwargs):
        sizes.append(ids.shape[0])
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(steerpipe.lm.generation, "_decode", counting)
    monkeypatch.setattr(steerpipe.lm.generation, "fit_rows", lambda model, tokens, cap: min(cap, 5))
    assert generate(tiny_model, prompts, batch_size=16, **GREEDY) == want
    assert sizes == [4, 4, 4]  # groups of 4 samples, at most 5 rows a batch
    assert fit_rows(tiny_model, 100, 7) == 7  # on the CPU the cap is the batch size


def test_length_chunks_split_where_padding_costs_more_than_a_call() -> None:
    from steerpipe.lm.prefill import length_chunks

    lengths = [5, 100, 6, 98, 7]
    # two chunks: 3 x 7 + 2 x 100 tokens and two calls, against 5 x 100 and one
    assert length_chunks(lengths, cost=10) == [[0, 2, 4], [3, 1]]
    assert length_chunks(lengths, cost=200) == [[0, 2, 4], [3, 1]]  # 621 against 700
    assert length_chunks(lengths, cost=300) == [[0, 2, 4, 3, 1]]  # 821 against 800
    assert length_chunks([4], cost=0) == [[0]]


@pytest.mark.parametrize("instruction", [[], [1, 40, 41, 42, 43, 44, 45, 46, 47, 48]])
def test_a_prefill_in_chunks_of_similar_length_samples_what_one_call_does(
    tiny_model, monkeypatch, instruction
) -> None:
    """Prompts of very different lengths prefill in chunks, each without the padding columns
    its rows all have (zeros in the cache there, which the mask hides): the same samples and
    log-probabilities as one padded call, control and steered, after a shared prefix or not."""
    import steerpipe.lm.prefill as prefill_module

    vec = 3 * torch.randn(64, generator=torch.Generator().manual_seed(9))
    rests = [[7, 8], list(range(100, 140)), [9], list(range(200, 236))]
    prompts = [(instruction or [1]) + r for r in rests for _ in range(2)]
    steers = [None, Steer(2, vec)] * 4
    kwargs = {"max_new_tokens": 5, "temperature": 0.9, "top_p": 0.95, "progress": False}
    whole: dict[int, list[float]] = {}
    with _forward_shapes(tiny_model) as one_call:
        want = generate(tiny_model, prompts, steers=steers, seed=3, logprobs=whole, **kwargs)
    monkeypatch.setattr(prefill_module, "CHUNK_COST", 1)
    chunked: dict[int, list[float]] = {}
    with _forward_shapes(tiny_model) as shapes:
        got = generate(tiny_model, prompts, steers=steers, seed=3, logprobs=chunked, **kwargs)
    assert got == want
    assert sorted(chunked) == sorted(whole) == [0, 2, 4, 6]
    for i in whole:
        assert chunked[i] == pytest.approx(whole[i], abs=1e-5)
    # after the prefix (the instruction on one row, then from layer 2 for the 4 groups), one
    # call pads the 4 prompts' rests to 40 columns (plain, then from layer 2); at a cost of 1
    # a call, each prompt is a chunk of its own: 1, 2, 36 and 40 columns
    n = 3 if instruction else 0
    assert shapes[:n] == one_call[:n] == [(1, 9), (1, 9), (4, 9)][:n]
    assert one_call[n : n + 3] == [(4, 40), (4, 40), (8, 1)]
    widths = [1, 1, 2, 2, 36, 36, 40, 40]
    assert shapes[n : n + 9] == [(1, w) for w in widths] + [(8, 1)]
