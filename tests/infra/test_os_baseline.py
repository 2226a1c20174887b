"""OS baseline (role os_baseline): kernel parameters, modules, sysctl, limits,
swap, nouveau, CPU governor, time sync, held kernel."""

from __future__ import annotations

import pytest

from infralib import parse_kv

pytestmark = pytest.mark.usefixtures("hostvars")


def _cmdline_params(expect) -> list[str]:
    return list(expect("os_baseline", "os_baseline_kernel_cmdline") or []) + list(
        expect("os_baseline", "os_baseline_kernel_cmdline_extra") or []
    )


def test_grub_config_has_kernel_parameters(host, expect, facts):
    params = _cmdline_params(expect)
    if facts["os_family"] == "Debian":
        dropin = host.file(expect("os_baseline", "__os_baseline_grub_dropin"))
        assert dropin.exists, f"{dropin.path} missing"
        line = next(l for l in dropin.content_string.splitlines() if l.startswith("GRUB_CMDLINE_LINUX="))
        for p in params:
            assert p in line.split('"')[1].split(), f"{p} not in {dropin.path}"
    else:
        args = host.check_output("sudo -n grubby --info=DEFAULT | sed -n 's/^args=//p'")
        for p in params:
            assert p in args.strip('"').split()


def test_generated_grub_menu_has_kernel_parameters(host, expect):
    grub_cfg = host.file("/boot/grub/grub.cfg")
    if not grub_cfg.exists:
        pytest.skip("no /boot/grub/grub.cfg on this host")
    content = host.check_output("sudo -n cat /boot/grub/grub.cfg")
    linux_lines = [l for l in content.splitlines() if l.strip().startswith("linux")]
    assert linux_lines, "no linux entries in grub.cfg"
    for p in _cmdline_params(expect):
        assert all(p in l.split() for l in linux_lines), f"{p} missing from a boot entry in grub.cfg"


def test_running_kernel_has_parameters(host, expect):
    running = host.file("/proc/cmdline").content_string.split()
    missing = [p for p in _cmdline_params(expect) if p not in running]
    if missing and not expect("os_baseline", "os_baseline_reboot_allowed"):
        pytest.skip(f"reboot pending (os_baseline_reboot_allowed is false): {' '.join(missing)} not active yet")
    assert not missing, f"{missing} configured but not in /proc/cmdline"


def test_kernel_modules_loaded_and_persistent(host, expect):
    modules = expect("os_baseline", "os_baseline_kernel_modules") or []
    conf = host.file("/etc/modules-load.d/90-gpufleet.conf")
    assert conf.exists
    listed = [l.strip() for l in conf.content_string.splitlines() if l.strip() and not l.startswith("#")]
    for m in modules:
        assert m in listed
        assert host.file(f"/sys/module/{m}").exists, f"module {m} not loaded"


def test_sysctl_values(host, expect):
    wanted = dict(expect("os_baseline", "os_baseline_sysctl") or {})
    wanted.update(expect("os_baseline", "os_baseline_sysctl_extra") or {})
    conf = parse_kv(host.file("/etc/sysctl.d/90-gpufleet.conf").content_string)
    for key, value in wanted.items():
        assert conf.get(key) == str(value), f"{key} in /etc/sysctl.d/90-gpufleet.conf"
    # One round trip for all live values: "key = value" per line.
    keys = sorted(wanted)
    live = parse_kv(host.run("sysctl " + " ".join(keys)).stdout)
    wrong = {k: (wanted[k], live.get(k)) for k in keys if (live.get(k) or "").split() != str(wanted[k]).split()}
    assert not wrong, f"sysctl values differ (wanted, live): {wrong}"


def test_limits_file(host, expect):
    limits = expect("os_baseline", "os_baseline_limits") or []
    conf = host.file("/etc/security/limits.d/90-gpufleet.conf")
    assert conf.mode == 0o644
    lines = {tuple(l.split()) for l in conf.content_string.splitlines() if l.strip() and not l.startswith("#")}
    for lim in limits:
        assert (lim["domain"], lim["type"], lim["item"], str(lim["value"])) in lines


def test_limits_effective_for_login_sessions(host, expect):
    limits = {(l["domain"], l["item"]): str(l["value"]) for l in expect("os_baseline", "os_baseline_limits") or []}
    nofile = limits.get(("*", "nofile"))
    memlock = limits.get(("*", "memlock"))
    # A fresh login session through PAM (what users and job launchers get).
    out = host.run("sudo -n su - %s -s /bin/sh -c 'ulimit -n; ulimit -l'", host.user().name)
    assert out.rc == 0, out.stderr
    got_nofile, got_memlock = out.stdout.split()
    if nofile:
        assert got_nofile == nofile
    if memlock:
        assert got_memlock == memlock


def test_systemd_default_limits(host, expect):
    limits = {(l["domain"], l["item"]): str(l["value"]) for l in expect("os_baseline", "os_baseline_limits") or []}
    out = host.check_output("systemctl show --property=DefaultLimitNOFILE --property=DefaultLimitMEMLOCK")
    props = parse_kv(out)
    if ("*", "nofile") in limits:
        assert props["DefaultLimitNOFILE"] == limits[("*", "nofile")].replace("unlimited", "infinity")
    if ("*", "memlock") in limits:
        assert props["DefaultLimitMEMLOCK"] == limits[("*", "memlock")].replace("unlimited", "infinity")


def test_swap_off(host, expect):
    if not expect("os_baseline", "os_baseline_swap_disabled"):
        pytest.skip("os_baseline_swap_disabled is false")
    assert host.file("/proc/swaps").content_string.strip().count("\n") == 0, "swap is active"
    for line in host.file("/etc/fstab").content_string.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) > 2:
            assert fields[2] != "swap", f"swap entry in /etc/fstab: {line}"


def test_nouveau_blacklisted(host, expect):
    if not expect("os_baseline", "os_baseline_blacklist_nouveau"):
        pytest.skip("os_baseline_blacklist_nouveau is false")
    conf = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.contains("^blacklist nouveau")
    assert conf.contains("^options nouveau modeset=0")
    assert not host.file("/sys/module/nouveau").exists, "nouveau is loaded"
    # Where the kernel ships nouveau, the initramfs must carry the blacklist
    # too, or nouveau loads before the root file system is mounted.
    kernel = host.check_output("uname -r")
    if not host.run(f"find /lib/modules/{kernel} -name 'nouveau.ko*' -print -quit").stdout.strip():
        return
    initrd = f"/boot/initrd.img-{kernel}"
    if host.file(initrd).exists and host.exists("lsinitramfs"):
        listing = host.check_output(f"sudo -n lsinitramfs {initrd}")
        assert "etc/modprobe.d/blacklist-nouveau.conf" in listing


def test_cpu_governor_unit(host, expect):
    governor = expect("os_baseline", "os_baseline_cpu_governor")
    if not governor:
        pytest.skip("os_baseline_cpu_governor is empty")
    unit = host.service("gpufleet-cpu-governor.service")
    assert unit.is_enabled
    files = host.run("ls /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null").stdout.split()
    if not files:
        pytest.skip("no cpufreq on this host (virtual machine or BIOS-controlled)")
    for f in files:
        assert host.file(f).content_string.strip() == governor


def test_time_sync(host, expect, facts):
    if not expect("os_baseline", "os_baseline_time_sync"):
        pytest.skip("os_baseline_time_sync is false")
    svc = host.service(expect("os_baseline", "__os_baseline_chrony_service", "chronyd"))
    assert svc.is_enabled
    assert svc.is_running
    servers = expect("os_baseline", "os_baseline_ntp_servers") or []
    if servers:
        conf = host.file(f"{expect('os_baseline', '__os_baseline_chrony_confdir')}/90-gpufleet.conf")
        for s in servers:
            assert conf.contains(f"^server {s} ")
    # chronyd answers (sources may still be unreachable on an isolated network).
    assert host.run("chronyc -n tracking").rc == 0


def test_running_kernel_held(host, expect, facts):
    if not expect("os_baseline", "os_baseline_kernel_hold"):
        pytest.skip("os_baseline_kernel_hold is false")
    if facts["os_family"] != "Debian":
        pytest.skip("holds checked through dpkg on Debian and Ubuntu")
    kernel = host.check_output("uname -r")
    # package -> selection (install/hold) for every installed package, in one call
    selections = {}
    for line in host.check_output("dpkg-query -W -f='${Package} ${Status}\\n'").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "installed":
            selections[parts[0]] = parts[1]
    image = f"linux-image-{kernel}"
    assert image in selections, f"{image} not installed"
    assert selections[image] == "hold", f"{image} is not held"
    for pkg in expect("os_baseline", "__os_baseline_kernel_packages") or []:
        if pkg in selections:
            assert selections[pkg] == "hold", f"{pkg} is installed but not held"
