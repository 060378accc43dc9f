"""steer: the negated vector, random directions of the vector's norm, and the doses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny import params

from steerpipe.steering.steer import (
    control_vectors,
    random_directions,
    steer_vector,
    unit_vector,
)
from steerpipe.steering.sweep import SweepParams


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


def test_unit_vector_absolute_is_the_vector_and_norm_has_the_layers_length() -> None:
    vector = torch.randn(16, generator=torch.Generator().manual_seed(3))
    assert unit_vector(vector, "absolute", None) is vector
    unit = unit_vector(vector, "norm", 7.5)
    torch.testing.assert_close(unit.norm(), torch.tensor(7.5))
    cos = torch.nn.functional.cosine_similarity(unit, vector, dim=0)
    torch.testing.assert_close(cos, torch.tensor(1.0))
    # a dose of 2 in norm units is twice the layer's mean residual norm long
    torch.testing.assert_close((2.0 * unit).norm(), torch.tensor(15.0))
    with pytest.raises(ValueError, match="mean residual-stream norm"):
        unit_vector(vector, "norm", None)


def test_steer_vector_takes_the_choice_by_the_metric_and_checks_it() -> None:
    from steerpipe.config import StageError

    vectors = {"vectors": torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)}
    meta = {"layers": [5, 9], "positions": [0, 1, 2], "resid_norms": [10.0, 20.0]}
    judged = [
        {"layer": 9, "position": 2, "coefficient": 0.5, "category": 1, "clean": True},
        {"layer": 5, "position": 0, "coefficient": 0.5, "category": 3, "clean": False},
    ]
    scores = [{"layer": 5, "position": 1, "score": 2.0}, {"layer": 9, "position": 0, "score": 1.0}]
    sweep = params(SweepParams, metric="clean", logprob_coefficient=3.0)
    auto = {"layer": "auto", "position": "auto", "coefficient": "auto", "scale": "absolute"}
    kw = {"judged": judged, "scores": scores}
    layer, pos, c, unit, norm = steer_vector(vectors, meta, **auto, sweep=sweep, **kw)
    assert (layer, pos, c, norm) == (9, 2, 0.5, 20.0)
    assert torch.equal(unit, vectors["vectors"][1, 2])
    logprob = dataclasses.replace(sweep, metric="logprob")
    given = auto | {"position": 0, "scale": "norm"}
    layer, pos, c, unit, norm = steer_vector(vectors, meta, **given, sweep=logprob, **kw)
    assert (layer, pos, c, norm) == (5, 0, 3.0, 10.0)
    assert torch.allclose(unit, vectors["vectors"][0, 0] / vectors["vectors"][0, 0].norm() * 10)
    with pytest.raises(StageError, match="steer.layer/position: layer 7 has no vector"):
        steer_vector(vectors, meta, **auto | {"layer": 7}, sweep=sweep, **kw)
