"""Property: random corruption of the example fleet never crashes `gpufleet validate`.

Hypothesis deletes keys, changes a value's type, inserts unknown keys,
truncates files, garbles YAML syntax, duplicates keys, nests collections
deeply, plants alias bombs, Ansible Vault values and non-finite numbers, one
to three times per example. It runs once per kind of input file, so each
kind gets its share: fleet.yaml, the Pulumi stacks, the hosts files, group_vars
and host_vars (the corruption starts in a file of that kind; later steps may
hit any file). Whatever it produces, validate must exit 0 or 2, never raise,
and when it exits 2 print only `where: what` lines and the count.

GPUFLEET_FUZZ_EXAMPLES sets the number of examples per kind (default 60).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from gpufleet.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = {
    str(p.relative_to(REPO)): p.read_text()
    for top in ("stacks", "inventory")
    for p in sorted((REPO / top).rglob("*"))
    if p.is_file()
}
FILES = sorted(EXAMPLE)
KINDS = {
    "fleet": [f for f in FILES if f == "stacks/fleet.yaml"],
    "stacks": [f for f in FILES if f.startswith("stacks/Pulumi.")],
    "hosts": [f for f in FILES if f.endswith("/hosts.yml")],
    "group_vars": [f for f in FILES if "/group_vars/" in f],
    "host_vars": [f for f in FILES if "/host_vars/" in f],
}

# Names and values without line breaks: a problem line quotes them (a newline in
# a key would split its line; that is the printer's business, not this test's).
texts = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.sampled_from(["all", "dc-fra", "h100-80gb", "1.33", "10.0.0.0/8", "2g.20gb", "", "~", "yes", "0x1F"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)), max_leaves=6)
YAML_NOISE = list(":-[]{},#&*!|>'\"%@`\t\n ") + ["\n  ", ": ", "- ", "{{", "\x00", "\ufeff"]
VAULT = "!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3133\n"
def _bomb(levels: int) -> str:
    out = ["b0: &b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    out += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(out) + "\n"


def text_op(draw: Any, op: str, text: str) -> str:
    """Corruptions written as text: PyYAML's dumper could not produce them."""
    lines = text.splitlines(keepends=True) or [""]
    i = draw(st.integers(0, len(lines) - 1))
    if op == "duplicate-key":
        keyed = [j for j, line in enumerate(lines) if ":" in line and not line.lstrip().startswith(("#", "-"))]
        if keyed:
            j = keyed[draw(st.integers(0, len(keyed) - 1))]
            lines.insert(j + 1, lines[j] if lines[j].endswith("\n") else lines[j] + "\n")
    elif op == "deep":
        n = draw(st.sampled_from([65, 1000, 50_000]))
        lines.append(f"\ndeep_{i}: " + "[" * n + "]" * n + "\n")
    elif op == "bomb":
        lines.append("\n" + _bomb(draw(st.integers(2, 9))))
    elif op in ("vault", "nonfinite"):
        m = re.search(r":\s*(\S[^#\n]*)$", lines[i])
        if m:
            new = VAULT if op == "vault" else draw(st.sampled_from([".nan", ".inf", "-.Inf", ".NaN"]))
            lines[i] = lines[i][: m.start(1)] + new + "\n"
    return "".join(lines)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a YAML document: mapping keys and list indexes."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for p in path[:-1]:
        data = data[p]
    return data


def corrupt(draw: Any, files: dict[str, str], pool: list[str]) -> str:
    rel = draw(st.sampled_from(pool))
    text = files[rel]
    op = draw(st.sampled_from(["delete-key", "change-type", "unknown-key", "truncate", "garble", "duplicate-key", "deep", "bomb", "vault", "nonfinite"]))
    if op in ("duplicate-key", "deep", "bomb", "vault", "nonfinite"):
        files[rel] = text_op(draw, op, text)
        return f"{op} {rel}"
    if op in ("truncate", "garble"):
        pos = draw(st.integers(0, len(text)))
        if op == "truncate":
            files[rel] = text[:pos]
        else:
            noise = draw(st.lists(st.sampled_from(YAML_NOISE), min_size=1, max_size=4))
            cut = draw(st.integers(0, 3))
            files[rel] = text[:pos] + "".join(noise) + text[pos + cut :]
        return f"{op} {rel}@{pos}"
    if "\ndeep_" in text or "&b0" in text:
        return f"{op} {rel}: skipped, already deep or alias-heavy"  # PyYAML itself would recurse or crawl
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return f"{op} {rel}: skipped, already not YAML"
    if data is None:
        data = {}
    paths = _paths(data)
    if op == "unknown-key":
        maps = [p for p in paths if isinstance(_parent(data, (*p, None)), dict)]
        path = maps[draw(st.integers(0, len(maps) - 1))] if maps else ()
        target = _parent(data, (*path, None))
        if not isinstance(target, dict):
            return f"{op} {rel}: no mapping"
        key = draw(st.one_of(texts.filter(bool), st.sampled_from(["gpufleet_gpus", "hosts_", "nodepools", "sites", "gpufleet:sites", "children"])))
        target[key] = draw(values)
    else:
        inner = [p for p in paths if p]
        if not inner:
            return f"{op} {rel}: empty"
        path = inner[draw(st.integers(0, len(inner) - 1))]
        parent = _parent(data, path)
        if op == "delete-key":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    files[rel] = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return f"{op} {rel}:{'.'.join(map(str, path))}"


LINE = re.compile(r"^\S.*: .+$")


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=int(os.environ.get("GPUFLEET_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_corruption_never_crashes(kind, data):
    files = dict(EXAMPLE)
    steps = [corrupt(data.draw, files, KINDS[kind] if n == 0 else FILES) for n in range(data.draw(st.integers(1, 3)))]
    note(steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, body in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(body, encoding="utf-8", errors="surrogatepass")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["validate", "--fleet", str(root / "stacks" / "fleet.yaml")])
    assert rc in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue() + out.getvalue()
    if rc == 0:
        assert "is valid" in out.getvalue()
    else:
        lines = err.getvalue().rstrip("\n").split("\n")
        n = len(lines) - 1
        assert n >= 1 and lines[-1] == f"{n} problem{'s' if n != 1 else ''} found"
        bad = [line for line in lines[:-1] if not LINE.match(line)]
        assert bad == []
