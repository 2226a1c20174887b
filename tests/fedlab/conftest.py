"""pytest wiring of the federation lab: one federation per test session.

Environment:
  FEDLAB_RENDER  a render directory to run against (default: `gpufleet render`
                 of this checkout into the session's temporary folder), e.g. one
                 made from an older commit in a `git worktree`
  FEDLAB_WORK    where the lab keeps its state and logs (default: .fedlab/run/<pid>;
                 not under /tmp, which the controllers see as their private /tmp)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import build  # noqa: E402
from fedlab import Federation, new_run_dir  # noqa: E402

_RESULTS: list[tuple[str, str, float]] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and "federation" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fedlab)


def _render(out: Path) -> Path:
    gpufleet = Path(sys.executable).with_name("gpufleet")
    r = subprocess.run([str(gpufleet), "render", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"gpufleet render --out {out}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def federation(tmp_path_factory) -> Federation:
    if os.geteuid() != 0:
        pytest.skip("the federation lab runs each controller in a mount namespace of its own (unshare, mount): needs root")
    t = time.monotonic()
    timings = build.ensure(echo=lambda m: print(m, flush=True))
    if timings:
        print(f"fedlab: build {time.monotonic() - t:.0f} s", flush=True)
    render = Path(os.environ["FEDLAB_RENDER"]) if os.environ.get("FEDLAB_RENDER") else _render(tmp_path_factory.mktemp("render"))
    work = Path(os.environ["FEDLAB_WORK"]) if os.environ.get("FEDLAB_WORK") else new_run_dir()
    fed = Federation(render, work, echo=lambda m: print(m, flush=True))
    # SIGTERM (CI's stop, a `kill`) unwinds like Ctrl-C, so the teardown below runs.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        fed.up()
        yield fed
    finally:
        fed.down()
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if item.get_closest_marker("fedlab") is None:
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        _RESULTS.append((item.nodeid, rep.outcome.upper(), rep.duration))


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("fedlab scenarios")
    for nodeid, outcome, duration in _RESULTS:
        terminalreporter.write_line(f"fedlab: {outcome:<7} {duration:7.1f} s  {nodeid}")
