"""YAML is read safely: syntax errors, object tags and duplicate keys are diagnostics."""

from __future__ import annotations

from reconciler.load.yamldoc import NodeIndex, parse_yaml


def test_duplicate_keys_are_reported_with_their_full_field_path() -> None:
    parsed = parse_yaml("x.yaml", b"a:\n  b: 1\n  b: 2\n")
    [d] = parsed.diagnostics
    assert (d.location.line, d.location.column, d.field, d.rule) == (3, 3, "a.b", "duplicate-key")
    assert "first defined on line 2" in d.message


def test_python_object_tags_are_refused_without_building_anything() -> None:
    parsed = parse_yaml("x.yaml", b"a: !!python/object/apply:os.system ['false']\n")
    assert parsed.value is None
    assert parsed.diagnostics[0].rule == "yaml-tag"


def test_syntax_error_points_at_the_problem() -> None:
    parsed = parse_yaml("x.yaml", b"a: [1, 2\nb: 3\n")
    assert parsed.diagnostics[0].rule == "yaml-syntax"
    assert parsed.diagnostics[0].location.line == 2


def test_non_utf8_file_is_an_error_not_a_crash() -> None:
    parsed = parse_yaml("x.yaml", b"a: \xff\xfe\n")
    assert parsed.diagnostics[0].rule == "encoding"


def test_locate_finds_values_keys_and_the_nearest_existing_parent() -> None:
    index = NodeIndex(b"schedules:\n  - id: a\n    cron: '61 * * * *'\n")
    assert index.locate(("schedules", 0, "cron")) == (3, 11)
    assert index.locate(("schedules", 0, "cron"), key=True) == (3, 5)
    assert index.locate(("schedules", 0, "timezone")) == (2, 5)


TRICKY = [
    b"a: 1\nb: [1, 2.5, true, null, ~, 0x1f, 0o17, .inf, -.nan]\n",
    b"base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
    b"when: 2026-01-02\nat: 2026-01-02T03:04:05Z\ntext: '2026-01-02'\n",
    b"yes_no: [yes, no, on, off, Yes]\nempty:\nlist: []\nmap: {}\n",
    b"multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    b"? complex key\n: value\n'quoted key': 1\n\"dq\": 2\n",
    b"anchors: [&a 1, *a, *a]\n",
    b"set: !!set {a, b}\nbinary: !!binary aGVsbG8=\nstr: !!str 123\n",
]


def test_fast_builder_gives_the_same_values_as_pyyaml() -> None:
    import yaml

    for doc in TRICKY:
        parsed = parse_yaml("x.yaml", doc)
        assert parsed.diagnostics == [], doc
        assert parsed.value == yaml.load(doc, Loader=yaml.SafeLoader), doc


def test_an_impossible_date_is_an_error_with_its_position() -> None:
    parsed = parse_yaml("x.yaml", b"arguments:\n  day: 2026-02-30\n")
    [d] = parsed.diagnostics
    assert (d.location.line, d.location.column, d.field) == (2, 8, "arguments.day")
    assert "quote it" in d.message
