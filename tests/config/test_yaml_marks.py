"""The line-tracking YAML reader: exact scalar text, duplicate keys, syntax errors, merge keys, marks."""

from __future__ import annotations

import pytest

from config.yaml_marks import Mark, YamlError, parse_yaml


def test_plain_scalars_stay_exact_text_and_nulls_become_none() -> None:
    doc = parse_yaml("a: 0.1\nb: 0123\nc: yes\nd: ~\ne:\nf: 'null'\ng: [1, 2.50]\n")
    assert doc.data == {
        "a": "0.1",
        "b": "0123",
        "c": "yes",
        "d": None,
        "e": None,
        "f": "null",
        "g": ["1", "2.50"],
    }


def test_empty_document_is_an_empty_mapping() -> None:
    doc = parse_yaml("# only a comment\n")
    assert doc.data == {}
    assert doc.mark_for(("x",)) == Mark(1, 1)


def test_syntax_error_carries_file_line_and_reason() -> None:
    with pytest.raises(YamlError) as info:
        parse_yaml("a: 1\nb: [1, 2\nc: 3\n", "f.yaml")
    (problem,) = info.value.problems
    assert problem.file == "f.yaml"
    assert (problem.line, problem.column) == (2, 4)  # the unclosed '[', not the line after it
    assert "YAML syntax error" in problem.reason
    assert str(problem).startswith("f.yaml:2:4: YAML syntax error: the '[' opened here is never closed")
    assert "noticed at line 3" in problem.reason


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("a:\n  b: {x: 1\nc: 3\n", (2, 6), "the '{' opened here is never closed"),
        ('a: "abc\nb: 1\n', (1, 4), "the quote opened here is never closed"),
        # not an unclosed opener: the line libyaml stopped at is the line to fix
        ("a: 1\n b: 2\n", (2, 3), "mapping values are not allowed"),
        ("a:\n  - x\n  y: 1\n", (3, 3), "did not find expected '-' indicator"),
    ],
)
def test_syntax_error_points_where_the_problem_starts(text: str, where: tuple[int, int], says: str) -> None:
    with pytest.raises(YamlError) as info:
        parse_yaml(text, "f.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == where
    assert says in problem.reason


def test_every_duplicate_key_is_an_error_with_both_lines() -> None:
    with pytest.raises(YamlError) as info:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    found = sorted((p.line, p.column, p.reason) for p in info.value.problems)
    assert found == [
        (4, 3, "duplicate key 'c' (first defined at line 3)"),
        (5, 1, "duplicate key 'a' (first defined at line 1)"),
    ]


def test_merge_keys_are_honoured_and_explicit_keys_win() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n")
    assert doc.data["item"] == {"x": "1", "y": "3"}
    assert doc.mark_for(("item", "y")) == Mark(4, 3)
    assert doc.mark_for(("item", "x")) == Mark(1, 11)  # found through the merged anchor


def test_non_scalar_key_is_an_error() -> None:
    with pytest.raises(YamlError) as info:
        parse_yaml("? [a, b]\n: 1\n")
    assert "mapping key must be a plain value" in info.value.problems[0].reason


def test_marks_follow_locations_and_skip_unknown_parts() -> None:
    doc = parse_yaml("top:\n  items:\n    - name: a\n    - name: b\n      extra: 1\n")
    assert doc.mark_for(("top", "items", 1, "extra")) == Mark(5, 7)
    assert doc.mark_for(("top", "items", 1)) == Mark(4, 7)
    # a missing key or a pydantic union tag points at the deepest part that exists
    assert doc.mark_for(("top", "items", 0, "missing")) == Mark(3, 7)
    assert doc.mark_for(("top", "function-after[x]", "items", 0, "name")) == Mark(3, 7)
    assert doc.mark_for(("top", "items", 9)) == Mark(2, 3)
