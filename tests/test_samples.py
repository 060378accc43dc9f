"""results.samples: the markdown of samples to read, drawn with a seed, control first."""

from __future__ import annotations

from steerpipe.results.samples import cell, degenerate_mark, draw, samples_markdown


def rows() -> list[dict]:
    out = []
    for prompt in range(5):
        for condition, c in (("steered", 1.0), ("dose_2.0", 2.0), ("control", 0.0)):
            for sample in (1, 0):
                out.append(
                    {"row": prompt, "step": 0, "condition": condition, "coefficient": c}
                    | {"sample": sample, "text": f"p{prompt} {condition} s{sample}\nnext|line"}
                    | {"degenerate": condition == "dose_2.0", "degenerate_reasons": "nll"}
                )
    return out


def test_draw_is_seeded_sorted_and_takes_all_when_few() -> None:
    units = [3, 1, 2, 1, 4, 0]
    assert draw(units, 3, seed=0) == draw(units, 3, seed=0)
    assert draw(units, 3, seed=0) == sorted(draw(units, 3, seed=0))
    assert set(draw(units, 3, seed=0)) <= {0, 1, 2, 3, 4}
    assert draw(units, 10, seed=0) == [0, 1, 2, 3, 4]
    assert draw(units, 0, seed=0) == []


def test_cells_keep_a_table_a_table() -> None:
    assert cell("a|b\nc") == "a\\|b⏎c" and cell(None) == "" and cell(1.5) == "1.5"


def test_samples_markdown_puts_control_first_then_by_coefficient() -> None:
    text = samples_markdown(
        rows(),
        unit=lambda r: (r["row"], r["step"]),
        unit_name="prompt",
        columns=[("degenerate", degenerate_mark)],
        n=2,
        seed=1,
        title="T",
    )
    lines = text.splitlines()
    assert lines[0] == "# T"
    heads = [line for line in lines if line.startswith("## prompt")]
    chosen = draw([(r["row"], 0) for r in rows()], 2, seed=1)
    assert heads == [f"## prompt {u}" for u in chosen]
    first = lines.index(heads[0])
    table = [line for line in lines[first + 4 : first + 10]]
    p = chosen[0][0]
    assert table == [
        f"| control | 0 | no | p{p} control s0⏎next\\|line |",
        f"| control | 1 | no | p{p} control s1⏎next\\|line |",
        f"| steered | 0 | no | p{p} steered s0⏎next\\|line |",
        f"| steered | 1 | no | p{p} steered s1⏎next\\|line |",
        f"| dose_2.0 | 0 | yes (nll) | p{p} dose_2.0 s0⏎next\\|line |",
        f"| dose_2.0 | 1 | yes (nll) | p{p} dose_2.0 s1⏎next\\|line |",
    ]
    assert lines[first + 2] == "| condition | sample | degenerate | text |"
