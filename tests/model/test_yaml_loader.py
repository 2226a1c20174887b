"""The bounded YAML loader gives exactly what yaml.safe_load gives, or refuses what would change the fleet silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpufleet.inventory import load_yaml

REPO = Path(__file__).resolve().parents[2]

DOCS = [
    "a: 1\nb: [x, 'y', \"z\"]\nc: {d: null, e: ~, f: yes, g: off, h: 0x1F, i: 010, j: 1.5e3, k: .inf}",
    "x: &a {k: 1}\ny: *a\nz: {<<: *a, m: 2}",
    "<<: [{a: 1}, {b: 2}]\nc: 3",
    "a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!binary aGVsbG8=",
    "day: 2024-01-02\nwhen: 2024-01-02 10:11:12\nset: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]",
    "- &l [1, 2]\n- *l\n- []\n- {}\n- ''\n-",
    "? [1, 2]\n: 3",
    "key: |\n  multi\n  line\nfolded: >\n  one\n  two\n",
    "x: &a 1\ny: &a 2",
    "a: *nope",
    "a: 1\n---\nb: 2\n",
    "",
    "# only a comment\n",
    "plain",
    "[1, 2, 3]",
]


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
def test_same_as_safe_load(doc, tmp_path):
    path = tmp_path / "doc.yml"
    path.write_text(doc)
    problems: list = []
    try:
        expected = yaml.safe_load(doc)
    except yaml.YAMLError:
        assert load_yaml(path, "doc.yml", problems) is None
        assert len(problems) == 1 and problems[0].message.startswith("not valid YAML")
        return
    got = load_yaml(path, "doc.yml", problems)
    assert problems == []
    assert repr(got) == repr(expected)  # repr: also compares recursive structures and key order
    if isinstance(got, dict) and "y" in got and "x" in got:
        assert got["y"] == got["x"]


REFUSED = {
    "dup: 1\ndup: 2": "dup: duplicate key 'dup' (lines 1 and 2); YAML would keep only the last one: remove one",
    "a: {b: [1, {c: 1, c: 2}]}": "a.b[1].c: duplicate key 'c' (line 1); YAML would keep only the last one: remove one",
    "1: x\n1.0: y": "1.0: duplicate key '1.0' (lines 1 and 2); YAML would keep only the last one: remove one",
    "a: &r [1, *r]": "line 1, column 11: alias *r is inside the collection it names (a structure that contains itself); gpufleet reads no such structure",
}


@pytest.mark.parametrize("doc", list(REFUSED), ids=range(len(REFUSED)))
def test_refused_where_safe_load_is_silent(doc, tmp_path):
    yaml.safe_load(doc)  # PyYAML takes it without a word
    path = tmp_path / "doc.yml"
    path.write_text(doc)
    problems: list = []
    assert load_yaml(path, "doc.yml", problems) is None
    assert [str(p) for p in problems] == [f"doc.yml: {REFUSED[doc]}"]


def test_every_yaml_file_in_the_project_loads_the_same():
    files = [p for top in ("stacks", "inventory", "roles", "tests") for p in (REPO / top).rglob("*.y*ml") if p.is_file()]
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            continue
        if len(docs) != 1:
            continue
        problems: list = []
        assert repr(load_yaml(path, str(path), problems)) == repr(docs[0]), path
