"""controls: the negated vector and random directions of the vector's norm."""

from __future__ import annotations

import torch

from steerpipe.controls import control_vectors, random_directions


def test_random_directions_have_the_vectors_norm_and_are_seeded() -> None:
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 3
    a = random_directions(vector, 5, seed=1)
    assert a.shape == (5, 64) and a.dtype == vector.dtype
    torch.testing.assert_close(a.norm(dim=1), vector.norm().expand(5))
    assert torch.equal(a, random_directions(vector, 5, seed=1))
    assert not torch.equal(a, random_directions(vector, 5, seed=2))
    # the first draws do not depend on how many are drawn
    assert torch.equal(random_directions(vector, 2, seed=1), a[:2])
    # random directions in 64 dimensions are far from the vector and from each other
    cos = torch.nn.functional.cosine_similarity(a, vector[None], dim=1)
    assert cos.abs().max() < 0.6


def test_control_vectors_names_and_the_negated_vector() -> None:
    vector = torch.arange(8, dtype=torch.float32) - 3.5
    controls = control_vectors(1.5 * vector, 2, seed=0)
    assert list(controls) == ["negated", "random_0", "random_1"]
    assert torch.equal(controls["negated"], -1.5 * vector)  # the vector at coefficient -c
    assert control_vectors(vector, 0, seed=0).keys() == {"negated"}
