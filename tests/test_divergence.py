"""divergence: the KL of steered from plain next-token distributions, against each row by hand,
and the neutral text it is measured on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import params

from steerpipe.config import StageError
from steerpipe.lm.chat import encode
from steerpipe.lm.divergence import KLParams, body, corpus, neutral_texts, next_token_kl
from steerpipe.lm.hooks import Steer, add_to_resid_pre

TEXTS = [[5, 300, 2000, 41, 7, 9, 1200], [77, 12, 13], [400, 401, 402, 403, 404]]


def by_hand(model, texts: list[list[int]], steer: Steer | None) -> float:
    """Mean over all positions of KL(steered || plain), one unpadded text at a time."""
    total, positions = 0.0, 0
    for text in texts:
        ids = torch.tensor([text], device=model.device)
        with torch.no_grad():
            plain = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            deltas = {} if steer is None else {steer.layer: steer.vector}
            with add_to_resid_pre(model, deltas):
                steered = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        total += float((steered.exp() * (steered - plain)).sum())
        positions += len(text)
    return total / positions


@pytest.mark.device
def test_kl_equals_each_row_by_hand(model_on_device) -> None:
    model = model_on_device
    g = torch.Generator().manual_seed(3)
    steers = [
        Steer(1, 2 * torch.randn(64, generator=g)),
        None,
        Steer(0, torch.randn(64, generator=g)),
    ]
    steers.append(Steer(1, -steers[0].vector))
    got = next_token_kl(model, TEXTS, steers, batch_size=4, progress=False)
    want = [by_hand(model, TEXTS, s) for s in steers]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-7)  # float32 log-softmax
    assert got[1] == 0.0  # no vector: exactly the plain model
    assert got[0] > 1e-3 and got[2] > 1e-3  # the vectors move the distribution
    assert got[0] != pytest.approx(got[3], rel=1e-3)  # KL is not symmetric in the vector's sign


@pytest.mark.device
def test_an_identity_hook_gives_exactly_zero(model_on_device) -> None:
    """A vector of zeros computes what the plain model computes, so its KL is exactly 0 (its
    row runs alone above its layer, as the plain rows run); beside other rows of a batch, 0 up
    to the batch's float rounding."""
    zero = Steer(1, torch.zeros(64))
    got = next_token_kl(model_on_device, TEXTS, [None, zero], batch_size=3, progress=False)
    assert got == [0.0, 0.0]
    other = Steer(1, torch.ones(64))
    mixed = next_token_kl(model_on_device, TEXTS, [zero, other, zero], batch_size=3, progress=False)
    assert abs(mixed[0]) < 1e-6 and abs(mixed[2]) < 1e-6 and mixed[1] > 1e-3


def test_empty_texts_are_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="none of them empty"):
        next_token_kl(tiny_model, [[1, 2], []], [None], progress=False)


def test_the_body_drops_gutenbergs_header_and_licence_and_reflows_lines() -> None:
    book = (
        "Title: X\n\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n\n"
        "First line\nof a paragraph.\n\n   \nSecond\n  one.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence text"
    )
    assert body(book) == "First line of a paragraph.\n\nSecond one."
    assert body("No markers\nhere.") == "No markers here."


def test_the_packaged_book_gives_evenly_spaced_passages(tokenizer) -> None:
    from reasoning_gym.data import read_data_file

    p = params(KLParams, n_texts=3, tokens=16)
    assert corpus(p.text) == read_data_file("in_the_year_2889.txt")  # reasoning-gym's own loader
    texts = neutral_texts(tokenizer, p)
    ids = encode(tokenizer, body(corpus(p.text)))
    assert len(ids) > 7_000  # Verne's story (7,803 tokens on SmolLM2), not a stub
    step = (len(ids) - 16) // 2
    assert texts == [ids[:16], ids[step : step + 16], ids[2 * step : 2 * step + 16]]
    assert len(ids) - (2 * step + 16) <= 1  # the last passage ends the book
    assert "Gutenberg" not in tokenizer.decode(texts[0])


def test_a_local_text_file_and_its_errors(tokenizer, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    with pytest.raises(StageError, match="fewer than kl.n_texts x kl.tokens = 32"):
        neutral_texts(tokenizer, params(KLParams, text=str(short), n_texts=2, tokens=16))
    one = neutral_texts(tokenizer, params(KLParams, text=str(short), n_texts=1, tokens=4))
    assert one == [encode(tokenizer, "Only a few words here.")[:4]]
    with pytest.raises(StageError, match="neither packaged:in_the_year_2889 nor a .txt file"):
        corpus(str(tmp_path / "missing.txt"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(StageError, match="is not UTF-8 text"):
        corpus(str(binary))
