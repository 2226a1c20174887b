"""Playbook runs through ansible-runner (``gpufleet baremetal apply``/``verify``)
against the local sshd: real SSH, real Ansible, harmless tasks in a temp dir."""

from __future__ import annotations

import json
import textwrap

from typer.testing import CliRunner

from gpufleet.baremetal.cli import app
from gpufleet.baremetal.runner import run_playbook

from test_preflight import write_inventory

PLAYBOOK = textwrap.dedent("""\
    - name: Harmless play
      hosts: all
      gather_facts: false
      tasks:
        - name: Answer
          ansible.builtin.ping:
        - name: Write a marker file
          ansible.builtin.copy:
            dest: "{{ marker_dir }}/{{ inventory_hostname }}.txt"
            content: "{{ inventory_hostname }}\\n"
            mode: "0644"
        - name: Skipped on purpose
          ansible.builtin.debug:
            msg: never
          when: false
        - name: Fail where told to
          ansible.builtin.fail:
            msg: "told to fail"
          when: should_fail | default(false)
    """)


def _setup(tmp_path, sshd, hosts):
    # This machine's own python (a pyenv shim on PATH would be found first).
    inv = write_inventory(tmp_path, sshd, hosts, {"marker_dir": str(tmp_path / "markers"),
                                                  "ansible_python_interpreter": "/usr/bin/python3"})
    (tmp_path / "markers").mkdir()
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK)
    return inv, book


def test_run_counts_per_host(tmp_path, sshd):
    inv, book = _setup(tmp_path, sshd, {"a-01": {}, "b-01": {"should_fail": True}})
    result = run_playbook(book, inv, ["a-01", "b-01"], artifacts=tmp_path / "art")
    assert not result.ok
    assert result.hosts["a-01"] == {"ok": 1, "changed": 1, "failed": 0, "unreachable": 0,
                                    "skipped": 2, "rescued": 0, "ignored": 0}
    assert result.hosts["b-01"]["failed"] == 1
    assert (tmp_path / "markers" / "a-01.txt").read_text() == "a-01\n"
    # Artifacts for a post-mortem: the output and one JSON file per event.
    assert (result.artifacts / "stdout").exists()
    events = list((result.artifacts / "job_events").glob("*.json"))
    assert any(json.loads(e.read_text()).get("event") == "playbook_on_stats" for e in events)


def test_rerun_changes_nothing_and_exit_codes(tmp_path, sshd):
    inv, book = _setup(tmp_path, sshd, {"a-01": {}})
    runner = CliRunner()
    args = ["apply", "--inventory", str(inv), "--playbook", str(book), "--skip-preflight",
            "--artifacts", str(tmp_path / "art1")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "artifacts:" in first.stdout
    args[-1] = str(tmp_path / "art2")
    second = runner.invoke(app, args)
    assert second.exit_code == 0
    # summary row: host ok changed failed unreachable skipped
    row = next(l for l in second.stdout.splitlines() if "a-01" in l and "│" in l)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells == ["a-01", "2", "0", "0", "0", "2"]


def test_apply_stops_at_preflight(tmp_path, sshd):
    inv, book = _setup(tmp_path, sshd, {"a-01": {"gpufleet_gpu_count": 8, "gpufleet_accelerator": "h100-80gb"}})
    res = CliRunner().invoke(app, ["apply", "--inventory", str(inv), "--playbook", str(book)])
    assert res.exit_code == 1
    assert "nothing was changed" in res.stderr
    assert not (tmp_path / "markers" / "a-01.txt").exists()


def test_failed_run_exit_code(tmp_path, sshd):
    inv, book = _setup(tmp_path, sshd, {"a-01": {"should_fail": True}})
    res = CliRunner().invoke(app, ["verify", "--inventory", str(inv), "--playbook", str(book),
                                   "--artifacts", str(tmp_path / "art")])
    assert res.exit_code == 1
    assert "a-01: failed: Fail where told to: told to fail" in res.stdout
