"""neurons: sparse feature rows and the masks."""

from __future__ import annotations

import torch

from steerpipe.neurons import SparseRows, neuron_masks


def test_sparse_rows_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.relu(torch.randn(n, 9, generator=g) - 0.5) for n in (4, 3))
    rows = SparseRows.cat([SparseRows.from_dense(a), SparseRows.from_dense(b)], 9)
    assert rows.n_rows == 7 and len(rows.values) == int((torch.cat([a, b]) != 0).sum())
    assert torch.equal(rows.to_dense(), torch.cat([a, b]))
    assert torch.allclose(rows.column_mean(), torch.cat([a, b]).mean(0))
    back = SparseRows.from_tensors(rows.tensors("basic"), "basic", 9)
    assert torch.equal(back.to_dense(), rows.to_dense())
    assert SparseRows.cat([], 9).to_dense().shape == (0, 9)


def test_log_frequency_of_trace_rows() -> None:
    """The alive mask's fallback for formats without firing frequencies: the share of rows in
    which a feature is nonzero, in log10, -10 where it never fires."""
    dense = torch.tensor([[1.0, 0, 0, 0], [2.0, 3.0, 0, 0], [0.5, 0, 0, -1.0], [1.0, 0, 0, 0]])
    freq = SparseRows.from_dense(dense).log_frequency()
    want = torch.tensor([0.0, torch.tensor(0.25).log10(), -10.0, torch.tensor(0.25).log10()])
    torch.testing.assert_close(freq, want)


def test_neuron_masks() -> None:
    log_frequency = torch.tensor([-7.0, -5.0, -5.0, -5.0, -2.0])
    means = {
        "basic": torch.tensor([0.0, 0.1, 0.1, 0.1, 0.1]),
        "0shot": torch.tensor([1.0, 0.1 + 2e-3, 0.1, 0.1, 0.1005]),
        "fewshot": torch.tensor([1.0, 0.1, 0.1 + 2e-3, 0.0, 0.1]),
    }
    masks = neuron_masks(
        log_frequency, means, baseline="basic", alive_log10_frequency=-6, reasoning_threshold=1e-3
    )
    assert masks["alive"].tolist() == [False, True, True, True, True]
    assert masks["reasoning"].tolist() == [False, True, True, False, False]  # feature 0 is dead
    assert masks["memory"].tolist() == [False, False, False, True, True]
