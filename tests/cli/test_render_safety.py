"""`gpufleet render --out DIR` never destroys what gpufleet did not write, and never leaks.

Each test runs the real command (a subprocess, as a user does) on real folders:
folders it must refuse (the fleet's inputs, a repository, a folder holding
someone's files, an old render without the marker), a user's file dropped into
an earlier render, a render killed with SIGKILL (then rerun), a render
interrupted with SIGINT or SIGTERM (its preview processes must be gone), and an
inventory holding dotfiles, keys, a vault password file and vaulted values.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GPUFLEET = [sys.executable, "-m", "gpufleet.cli"]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GPUFLEET, *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*GPUFLEET, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (dotfiles included) and a digest of each file, for before/after comparison."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def make_fleet(dest: Path, git: bool = False) -> Path:
    for part in ("stacks", "inventory"):
        shutil.copytree(ROOT / part, dest / part)
    if git:
        subprocess.run(["git", "init", "-q", str(dest)], check=True)
        (dest / "plan.json").write_text('{"mine": true}\n')
    return dest


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_fleet(tmp_path / "project")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One completed render of the example, copied by tests that need an earlier render."""
    root = make_fleet(tmp_path_factory.mktemp("rendered"))
    r = run("render", "--out", "out", cwd=root)
    assert r.returncode == 0, r.stderr
    return root / "out"


def earlier_render(rendered: Path, project: Path) -> Path:
    out = project / "out"
    shutil.copytree(rendered, out, symlinks=True)
    return out


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ------------------------------------------------------------- refused folders


def test_unrelated_folder_with_plan_json_and_git_is_untouched(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "someones-repo"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "plan.json").write_text('{"not": "a render"}\n')
    (other / "notes.txt").write_text("keep me\n")
    before = snapshot(other)
    r = run("render", "--out", str(other), cwd=project)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"{other}: holds a git repository (.git); render replaces its folder as a whole: choose a new folder"
    assert snapshot(other) == before


def test_out_dot_in_a_project_with_git_is_refused(tmp_path: Path) -> None:
    project = make_fleet(tmp_path / "repo", git=True)
    before = snapshot(project)
    r = run("render", "--out", ".", cwd=project)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ".: is the fleet's project folder; render writes a folder of its own (e.g. --out out)"
    assert snapshot(project) == before


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("stacks", "is the fleet's stacks folder; render writes a folder of its own (e.g. --out out)"),
        ("inventory/dc-fra", "is the inventory dc-fra; render writes a folder of its own (e.g. --out out)"),
        ("inventory", "holds the inventory fra-hub ({root}/inventory/fra-hub); render replaces its folder as a whole, so it must not hold the fleet's inputs"),
        ("inventory/dc-fra/rendered", "is inside the inventory dc-fra, which the engines read as input; write the render outside it (e.g. --out out)"),
        ("stacks/out", "is inside the fleet's stacks folder, which the engines read as input; write the render outside it (e.g. --out out)"),
        ("..", "holds the fleet's project folder ({root}); render replaces its folder as a whole, so it must not hold the fleet's inputs"),
    ],
)
def test_the_fleets_inputs_are_refused(project: Path, out: str, message: str) -> None:
    before = snapshot(project.parent)
    r = run("render", "--out", out, cwd=project)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"{out}: {message.format(root=project.resolve())}"
    assert snapshot(project.parent) == before


def test_repository_root_is_refused_when_the_fleet_lives_elsewhere(project: Path, tmp_path: Path) -> None:
    repo = make_fleet(tmp_path / "checkout", git=True)
    before = snapshot(repo)
    r = run("render", "--fleet", str(project / "stacks" / "fleet.yaml"), "--out", str(repo), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "holds a git repository (.git)" in r.stderr
    assert snapshot(repo) == before


def test_old_render_without_marker_is_refused_with_a_way_forward(project: Path) -> None:
    out = project / "out"
    (out / "sites" / "dc-fra").mkdir(parents=True)
    (out / "plan.json").write_text("{}")
    (out / "sites" / "dc-fra" / "x.yaml").write_text("a: 1\n")
    before = snapshot(out)
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "out: has no .gpufleet-render marker (a render by an older gpufleet, or not a render at all); "
        "gpufleet replaces only folders it marked: remove it yourself (rm -r out) or choose a new folder"
    )
    assert snapshot(out) == before


def test_foreign_folder_is_refused_and_left_untouched(project: Path) -> None:
    out = project / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    r = run("render", "--out", "mine", cwd=project)
    assert r.returncode == 2
    assert r.stderr.strip() == "mine: exists and is not a gpufleet render output (no .gpufleet-render marker); choose an empty or new folder"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("change", ["new-file", "new-dotfile", "new-folder", "edited-file", "symlink"])
def test_user_content_in_an_earlier_render_is_not_deleted(rendered: Path, project: Path, change: str) -> None:
    out = earlier_render(rendered, project)
    sdir = out / "sites" / "dc-fra"
    if change == "new-file":
        (sdir / "my-notes.md").write_text("mine\n")
        found = f"{sdir / 'my-notes.md'} was not written by gpufleet render"
    elif change == "new-dotfile":
        (sdir / "ansible" / ".env").write_text("TOKEN=x\n")
        found = f"{sdir / 'ansible' / '.env'} was not written by gpufleet render"
    elif change == "new-folder":
        (sdir / "drafts").mkdir()
        found = f"{sdir / 'drafts'}/ was not written by gpufleet render"
    elif change == "edited-file":
        with (out / "plan.md").open("a") as f:
            f.write("\nreviewed by me\n")
        found = f"{out / 'plan.md'} was changed after gpufleet wrote it"
    else:
        (sdir / "link").symlink_to(project / "stacks")
        found = f"{sdir / 'link'} is a symbolic link gpufleet did not write"
    before = snapshot(out)
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"out: {found}; render would delete it: move it out of out or choose a new folder"
    assert snapshot(out) == before


def test_earlier_render_is_replaced_in_one_step(rendered: Path, project: Path) -> None:
    out = earlier_render(rendered, project)
    fleet = project / "stacks" / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("replicas: 2", "replicas: 3", 1))
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert next(m for m in plan["models"] if m["name"] == "llama-3-1-70b-instruct")["replicas_per_site"] == 3
    marker = json.loads((out / ".gpufleet-render").read_text())
    assert marker["format"] == 1 and marker["fleet"] == str(fleet.resolve())
    assert set(marker["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {".gpufleet-render"}
    assert siblings(out) == []


# ------------------------------------------------------------ killed and interrupted


def _previews_of(pid: int, timeout: float = 240.0) -> list[int]:
    """The preview processes (python -m cloud.preview) a render started, once there are some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"cloud.preview" in cmdline:
                found.append(int(proc.name))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the render started no preview process")


def _gone(pids: list[int], timeout: float = 20.0) -> bool:
    """Whether every pid has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_render_killed_with_sigkill_leaves_nothing_a_rerun_cannot_clean(rendered: Path, project: Path) -> None:
    out = earlier_render(rendered, project)
    before = snapshot(out)
    proc = start("render", "--out", "out", cwd=project)
    children = _previews_of(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(children), f"preview processes {children} outlived the killed render"
    assert snapshot(out) == before, "the earlier render changed"
    left = siblings(out)
    assert len(left) == 1 and left[0].startswith(".out.gpufleet-new-"), left
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"render: removed {project / left[0]}, left by an earlier render that was killed" in r.stderr
    assert siblings(out) == []
    assert (out / ".gpufleet-render").is_file()


@pytest.mark.parametrize("moment", ["between-renames", "while-removing-the-old-render", "before-the-temporary-mark-was-dropped"])
def test_a_render_killed_while_swapping_is_cleaned_by_the_next(rendered: Path, project: Path, moment: str) -> None:
    """The states a SIGKILL during the swap leaves (made here by hand), then a real rerun."""
    out = earlier_render(rendered, project)
    if moment == "between-renames":
        out.rename(project / ".out.gpufleet-old-abc123")
        shutil.copytree(rendered, project / ".out.gpufleet-new-abc123")
    elif moment == "while-removing-the-old-render":
        old = project / ".out.gpufleet-old-abc123"
        shutil.copytree(rendered, old)
        shutil.rmtree(old / "sites" / "aws-euc1")
        (old / "plan.md").unlink()
    else:
        new = project / ".out.gpufleet-new-abc123"
        shutil.copytree(rendered, new)
        # pid_max is at most 2**22 on Linux: no process has this pid.
        (new / ".gpufleet-render-tmp").write_text(json.dumps({"format": 1, "pid": 2**22 + 7, "start": None, "target": "out"}))
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    assert siblings(out) == []
    assert (out / ".gpufleet-render").is_file()


def test_temporary_folder_of_a_running_render_and_unmarked_folders_are_left_alone(rendered: Path, project: Path) -> None:
    mine = project / ".out.gpufleet-new-live01"
    mine.mkdir()
    (mine / ".gpufleet-render-tmp").write_text(json.dumps({"format": 1, "pid": os.getpid(), "start": None, "target": "out"}))
    unmarked = project / ".out.gpufleet-old-user01"
    unmarked.mkdir()
    (unmarked / "data.txt").write_text("not gpufleet's")
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    assert mine.is_dir() and (unmarked / "data.txt").read_text() == "not gpufleet's"


@pytest.mark.parametrize(("sig", "rc"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_render_stops_its_previews_and_removes_its_temporary_folder(rendered: Path, project: Path, sig: int, rc: int) -> None:
    out = earlier_render(rendered, project)
    before = snapshot(out)
    proc = start("render", "--out", "out", cwd=project)
    children = _previews_of(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == rc, err
    assert "Traceback" not in err
    assert f"render: interrupted ({signal.Signals(sig).name}); its preview processes were stopped and its temporary folder removed" in err
    assert _gone(children, timeout=5), f"preview processes {children} still run after the render exited"
    assert siblings(out) == []
    assert snapshot(out) == before


# ------------------------------------------------------------------ what is copied


KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def _vault(text: str, name: str, password_file: Path) -> str:
    r = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(password_file), text, "--name", name], capture_output=True, text=True, check=True)
    return r.stdout


def test_only_what_ansible_reads_is_copied_and_vaulted_values_stay_encrypted(project: Path, tmp_path: Path) -> None:
    inv = project / "inventory" / "dc-fra"
    password_file = tmp_path / "vault-password"
    password_file.write_text("correct horse battery staple\n")
    # Things that sit beside an inventory and must never reach the output.
    (inv / ".vault_pass").write_text("correct horse battery staple\n")
    (inv / "vault-password.txt").write_text("correct horse battery staple\n")
    (inv / ".ssh").mkdir()
    (inv / ".ssh" / "id_ed25519").write_text(KEY)
    (inv / "README.md").write_text("how to run the playbooks\n")
    (inv / "group_vars" / ".hidden.yml").write_text("gpufleet_rack: nope\n")
    (inv / "group_vars" / "all.yml~").write_text("editor backup\n")
    (inv / ".git-crypt").mkdir()
    (inv / ".git-crypt" / "key").write_text(KEY)
    # A vaulted secret the roles use, in a class's group_vars folder beside its plain variables.
    gv = inv / "group_vars" / "control_plane.yml"
    gv.write_text(gv.read_text() + _vault("hunter2-plaintext", "ansible_become_password", password_file))
    r = run("validate", cwd=project)
    assert r.returncode == 0, r.stderr
    r = run("render", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    rendered = project / "out" / "sites" / "dc-fra" / "ansible" / "inventory"
    assert sorted(p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file()) == [
        "gpufleet-derived.yml",
        "group_vars/all.yml",
        "group_vars/control_plane.yml",
        "group_vars/hgx_h100.yml",
        "group_vars/l40s_4x.yml",
        "host_vars/fra-hgx-04.yml",
        "hosts.yml",
    ]
    everything = b"".join(p.read_bytes() for p in (project / "out").rglob("*") if p.is_file())
    for secret in (b"hunter2-plaintext", b"correct horse battery staple", b"PRIVATE KEY"):
        assert secret not in everything
    assert (rendered / "group_vars" / "control_plane.yml").read_bytes() == gv.read_bytes()
    # Ansible itself reads the rendered inventory: the host's variable is the vaulted value, and
    # ansible-vault decrypts it to the secret, intact.
    cmd = [str(BIN / "ansible-inventory"), "-i", str(rendered), "--host", "fra-cp-01", "--vault-password-file", str(password_file)]
    host = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout)
    ciphertext = host["ansible_become_password"]["__ansible_vault"]
    assert ciphertext.startswith("$ANSIBLE_VAULT;1.1;AES256")
    cmd = [str(BIN / "ansible-vault"), "decrypt", "--vault-password-file", str(password_file), "--output", "-", "-"]
    assert subprocess.run(cmd, input=ciphertext, capture_output=True, text=True, check=True, timeout=60).stdout == "hunter2-plaintext"
    assert host["gpufleet_k8s_api_endpoint"] == "k8s-api.dc-fra.acme.internal:6443"


def test_a_vaulted_gpufleet_variable_is_refused(project: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "vault-password"
    password_file.write_text("pw\n")
    gv = project / "inventory" / "dc-fra" / "group_vars" / "l40s_4x.yml"
    data = yaml.safe_load(gv.read_text())
    del data["gpufleet_pool"]
    gv.write_text(yaml.safe_dump(data) + _vault("serving", "gpufleet_pool", password_file))
    r = run("validate", cwd=project)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (
        "inventory/dc-fra/group_vars/l40s_4x.yml: gpufleet_pool: gpufleet_pool is vaulted (!vault), but gpufleet needs its value to check the fleet: "
        "keep it in plain text (vault only secrets gpufleet does not read) (on 3 hosts: fra-l40s-01, fra-l40s-02, fra-l40s-03)"
    )
