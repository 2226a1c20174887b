"""The inventory reader's fast YAML loader gives exactly what yaml.safe_load gives."""

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
    "a: &r [1, *r]",
    "? [1, 2]\n: 3",
    "key: |\n  multi\n  line\nfolded: >\n  one\n  two\n",
    "dup: 1\ndup: 2",
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
