"""One runbook per alert, each with meaning, impact, diagnosis and mitigation."""

from __future__ import annotations

from k8s.monitoring import context, rules

from .conftest import FLEET, REPO

RUNBOOKS = REPO / "docs" / "runbooks"
SECTIONS = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"]


def _severities() -> dict[str, str]:
    return {a["alert"]: a["labels"]["severity"] for a in rules.alerts(rules.rule_groups(context(FLEET, "dc-fra")))}


def _alerts() -> set[str]:
    return set(_severities())


def test_every_alert_has_a_complete_runbook() -> None:
    for name in _alerts():
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        positions = [text.find(s) for s in SECTIONS]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), name
        diagnosis = text[positions[2]:positions[3]]
        assert "```" in diagnosis, f"{name}: diagnosis has no commands"


def test_no_runbook_without_an_alert_and_the_index_lists_all() -> None:
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == _alerts()
    index = (RUNBOOKS / "README.md").read_text()
    for name, severity in _severities().items():
        assert f"| {name} | {severity} | [{name}.md]({name}.md) |" in index
