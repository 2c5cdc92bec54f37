"""The generated deploy files, each checked by its ecosystem's validator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jinja2
import pytest
import yaml

from deploy_renders import COMBOS, answers, combos, rendered, tool, validate

SYSTEMD = combos(target="systemd") + combos(target="ansible")
# What `systemd-analyze security --offline=yes` measures for the generated unit (systemd 252):
# dropping NoNewPrivileges= alone raises it to 1.2, so the limit is the measured value.
MAX_EXPOSURE = 1.1
# The unit's hardening, directive by directive: losing one fails by name, even when the
# exposure score (rounded to a tenth) would hide it.
HARDENING: dict[str, list[str]] = {
    "UMask": ["0027"],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "PrivateUsers": ["yes"],
    "PrivateMounts": ["yes"],
    "NoNewPrivileges": ["yes"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "DevicePolicy": ["closed"],
    "KeyringMode": ["private"],
    "RemoveIPC": ["yes"],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "SystemCallErrorNumber": ["EPERM"],
}


# Resource limits: measured idle RSS of each flavour, and the headroom every memory cap keeps over it.
IDLE_RSS_MIB = {"python": 50, "rust": 6}
HEADROOM = 5
LIMITS = ("MemoryHigh", "MemoryMax", "MemorySwapMax", "TasksMax", "CPUQuota")


def _mib(value: str) -> float:
    """A memory size of systemd (512M, 1G), Kubernetes (512Mi, 1Gi) or podman (512m) in MiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG])i?", value, re.IGNORECASE)
    assert match, f"not a memory size: {value!r}"
    return float(match.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[match.group(2).upper()]


def _cores(value: str | int | float) -> float:
    """A CPU amount of Kubernetes ("1", 2, "500m") or systemd's CPUQuota ("200%") in cores."""
    text = str(value)
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_limit_parsers_read_each_unit() -> None:
    assert [_mib("512M"), _mib("512Mi"), _mib("512m"), _mib("1G"), _mib("1024K")] == [512, 512, 512, 1024, 1]
    assert [_cores("200%"), _cores("500m"), _cores("1"), _cores(2)] == [2, 0.5, 1, 2]
    with pytest.raises(AssertionError, match="not a memory size"):
        _mib("512")


def test_every_target_is_covered_with_both_flavours() -> None:
    for target in ("systemd", "ansible", "kubernetes", "container"):
        assert {answers(c)["flavour"] for c in combos(target=target)} == {"python", "rust"}, target
    bare = rendered("python-none-none")
    assert sorted(p.name for p in (bare / "deploy").iterdir()) == ["grafana", "prometheus"]


@pytest.mark.parametrize("combo", list(COMBOS))
def test_deploy_files_exist_only_for_the_chosen_targets(combo: str) -> None:
    root, chosen = rendered(combo), answers(combo)["deploy_targets"]
    name = answers(combo)["project_name"]
    unit = "systemd" in chosen or "ansible" in chosen
    assert (root / "deploy" / "systemd" / f"{name}.service").exists() == unit
    assert (root / "deploy" / "systemd" / f"{name}-backup.service").exists() == unit
    assert (root / "deploy" / "systemd" / f"{name}-backup.timer").exists() == unit
    assert (root / "deploy" / "logrotate" / name).exists() == unit
    assert (root / "deploy" / "ansible").exists() == ("ansible" in chosen)
    assert (root / "deploy" / "kubernetes").exists() == ("kubernetes" in chosen)
    assert (root / "deploy" / "container" / "Containerfile").exists() == ("container" in chosen)
    assert (root / ".dockerignore").exists() == ("container" in chosen)


@pytest.mark.parametrize("combo", list(COMBOS))
def test_every_yaml_file_is_yamllint_clean(combo: str) -> None:
    validate(["yamllint", "--strict", "-c", ".yamllint.yml", "deploy"], rendered(combo))


# ---------------------------------------------------------------------- systemd
def _verify_root(tmp_path: Path, unit: Path, executable: str | None) -> Path:
    """A minimal root for `systemd-analyze verify --root`: the host's units, kill, and the service binary."""
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    shutil.copy2("/usr/bin/kill", root / "usr" / "bin" / "kill")
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")
    shutil.copy2(unit, root / "etc" / "systemd" / "system" / unit.name)
    if executable:
        stub = root / executable.lstrip("/")
        stub.parent.mkdir(parents=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    return root


def _unit(combo: str, suffix: str = ".service") -> Path:
    """The service's unit, or with suffix `-backup.service` / `-backup.timer` the backup's."""
    return rendered(combo) / "deploy" / "systemd" / f"{answers(combo)['project_name']}{suffix}"


def _directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("suffix", [".service", "-backup.service"])
@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_verify_has_no_warning(combo: str, suffix: str, tmp_path: Path) -> None:
    unit = _unit(combo, suffix)
    exec_start = _directives(unit)["ExecStart"][0].split()[0]
    # the binary must exist for verify: a stub at the unit's own path, inside a scratch root
    root = _verify_root(tmp_path, unit, exec_start)
    proc = validate(["systemd-analyze", "verify", f"--root={root}", unit.name], tmp_path)
    assert proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    # the same check fails without the binary: the scratch root is really what verify reads
    (root / exec_start.lstrip("/")).unlink()
    missing = validate(["systemd-analyze", "verify", f"--root={root}", unit.name], tmp_path, expect_ok=False)
    assert "is not executable" in missing.stderr


@pytest.mark.parametrize("suffix", [".service", "-backup.service"])
@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_security_exposure_is_low(combo: str, suffix: str) -> None:
    unit = _unit(combo, suffix)
    proc = validate(["systemd-analyze", "security", "--offline=yes", str(unit)], unit.parent)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


@pytest.mark.parametrize("suffix", [".service", "-backup.service"])
@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_unit_keeps_every_hardening_directive(combo: str, suffix: str) -> None:
    d = _directives(_unit(combo, suffix))
    # the backup needs no network: only local sockets, none at all on IP
    wanted = HARDENING if suffix == ".service" else {
        **HARDENING, "RestrictAddressFamilies": ["AF_UNIX"], "PrivateNetwork": ["yes"], "IPAddressDeny": ["any"]}
    missing = sorted(key for key in wanted if key not in d)
    assert not missing, f"hardening directives missing from the unit: {missing}"
    changed = {key: d[key] for key, value in wanted.items() if d[key] != value}
    assert not changed, f"hardening directives changed (expected {({k: HARDENING[k] for k in changed})}): {changed}"


@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_unit_follows_the_contract(combo: str) -> None:
    root, name = rendered(combo), answers(combo)["project_name"]
    d = _directives(_unit(combo))
    config = tomllib.loads((root / "cfg" / "config.toml").read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["Restart"] == ["on-failure"]
    assert float(d["WatchdogSec"][0].rstrip("s")) >= 3 * config["heartbeat"]["interval_secs"]
    assert float(d["TimeoutStopSec"][0].rstrip("s")) > config["shutdown"]["timeout_secs"]
    assert d["WorkingDirectory"] == [f"/srv/app/{name}"]
    # journald collects stderr: the unit keeps the lines out of the log file
    assert d["Environment"] == ["PREFIX=/srv", f"{name.replace('-', '_').upper()}_LOG__TARGET=stderr"]
    assert d["User"] == [name]
    binary = ".venv/bin" if answers(combo)["flavour"] == "python" else "bin"
    assert d["ExecStart"] == [f"/srv/app/{name}/{binary}/{name} run --config cfg/config.toml"]
    writable = d["ReadWritePaths"][0].split()
    assert sorted(writable) == sorted(["/srv/run", f"/srv/data/{name}", f"/srv/app/{name}/log", f"/srv/app/{name}/tmp"])


@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_unit_sets_resource_limits(combo: str) -> None:
    d = _directives(_unit(combo))
    missing = [key for key in LIMITS if key not in d]
    assert not missing, f"resource limits missing from the unit: {missing}"
    assert all(len(d[key]) == 1 for key in LIMITS), {key: d[key] for key in LIMITS}
    idle = IDLE_RSS_MIB[answers(combo)["flavour"]]
    memory_max, memory_high = _mib(d["MemoryMax"][0]), _mib(d["MemoryHigh"][0])
    assert memory_max >= HEADROOM * idle, f"MemoryMax={d['MemoryMax'][0]}: less than {HEADROOM} x the idle {idle} MiB"
    assert HEADROOM * idle <= memory_high < memory_max, "MemoryHigh reclaims before the cap, well above idle"
    assert d["MemorySwapMax"] == ["0"]
    # the threads: one per core (executor or Tokio workers) and, in Rust, Tokio's blocking pool
    assert int(d["TasksMax"][0]) >= (512 + 64 if answers(combo)["flavour"] == "rust" else 64)
    assert re.fullmatch(r"\d+%", d["CPUQuota"][0]) and _cores(d["CPUQuota"][0]) >= 1


@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_connection_cap_stays_below_the_file_descriptor_limit(combo: str) -> None:
    root = rendered(combo)
    nofile = int(_directives(_unit(combo))["LimitNOFILE"][0])
    # http.max_connections (default 1024) is lowered at run time to RLIMIT_NOFILE - 64, keeping 64
    # descriptors for the log, PID, heartbeat and data files; the unit's limit must leave the
    # default untouched. Until the key is in cfg/config.toml, its default is checked.
    config = tomllib.loads((root / "cfg" / "config.toml").read_text())
    max_connections = config["http"].get("max_connections", 1024)
    assert max_connections <= nofile - 64, f"LimitNOFILE={nofile} would lower http.max_connections={max_connections}"


@pytest.mark.parametrize("combo", SYSTEMD)
def test_systemd_backup_timer_runs_the_backup_daily(combo: str, tmp_path: Path) -> None:
    name = answers(combo)["project_name"]
    service, timer = _directives(_unit(combo, "-backup.service")), _directives(_unit(combo, "-backup.timer"))
    main = _directives(_unit(combo))
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [main["ExecStart"][0].replace(" run ", " backup ")]
    assert service["WorkingDirectory"] == main["WorkingDirectory"] and service["User"] == main["User"]
    assert service["Environment"] == ["PREFIX=/srv"]
    # it writes the backup dir only; the data dir it reads stays read-only (ProtectSystem=strict)
    assert service["ReadWritePaths"] == [f"/srv/backup/{name}"]
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert timer["Unit"] == [f"{name}-backup.service"] and timer["WantedBy"] == ["timers.target"]
    # systemd-analyze verify reads both: the timer with the service it starts
    exec_start = service["ExecStart"][0].split()[0]
    root = _verify_root(tmp_path, _unit(combo, "-backup.service"), exec_start)
    shutil.copy2(_unit(combo, "-backup.timer"), root / "etc" / "systemd" / "system")
    proc = validate(["systemd-analyze", "verify", f"--root={root}", f"{name}-backup.timer"], tmp_path)
    assert proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


# ---------------------------------------------------------------------- logrotate
def _logrotate_rules(combo: str) -> str:
    return (rendered(combo) / "deploy" / "logrotate" / answers(combo)["project_name"]).read_text()


@pytest.mark.parametrize("combo", SYSTEMD)
def test_logrotate_rules_signal_through_the_pid_file(combo: str, tmp_path: Path) -> None:
    name, text = answers(combo)["project_name"], _logrotate_rules(combo)
    assert f"/srv/app/{name}/log/{name}.log {{" in text
    assert "copytruncate" not in re.sub(r"#.*", "", text)
    assert f"pidfile=/srv/run/{name}.pid" in text and 'kill -HUP "$(cat "$pidfile")"' in text
    # the audit file has its own rule, kept longer than the log: a year of weekly files
    audit = text.split(f"/srv/app/{name}/log/{name}.audit.log {{", 1)[1].split("\n}", 1)[0]
    assert re.search(r"^\s+weekly$", audit, re.M) and re.search(r"^\s+rotate 52$", audit, re.M), audit
    assert 'kill -HUP "$(cat "$pidfile")"' in audit
    # logrotate -d: the service user does not exist on this machine, so it is replaced by root
    rules = tmp_path / name
    rules.write_text(text.replace(f"su {name} {name}", "su root root"))
    rules.chmod(0o644)
    proc = validate(["logrotate", "-d", "-s", str(tmp_path / "state"), str(rules)], tmp_path)
    assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


@pytest.mark.parametrize("combo", SYSTEMD)
def test_logrotate_postrotate_is_shellcheck_clean(combo: str, tmp_path: Path) -> None:
    text = _logrotate_rules(combo)
    script = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    path = tmp_path / "postrotate.sh"
    path.write_text("#!/bin/sh\n" + script)
    validate(["shellcheck", str(path)], tmp_path)


# ---------------------------------------------------------------------- kubernetes
def _kustomize(root: Path, tmp_path: Path) -> list[Path]:
    """Render the example overlay with kubectl's kustomize; one file per manifest."""
    overlay = root / "deploy" / "kubernetes" / "overlays" / "example"
    out = validate(["kubectl", "kustomize", str(overlay)], root).stdout
    files = []
    for index, doc in enumerate(yaml.safe_load_all(out)):
        path = tmp_path / f"{index}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(path)
    return files


@pytest.mark.parametrize("combo", combos(target="kubernetes"))
def test_kubernetes_manifests_validate_strictly(combo: str, tmp_path: Path) -> None:
    root = rendered(combo)
    files = _kustomize(root, tmp_path)
    kinds = sorted(p.name.split("-", 1)[1] for p in files)
    assert kinds == ["ConfigMap.yaml", "CronJob.yaml", "Deployment.yaml", "Namespace.yaml", "PersistentVolumeClaim.yaml",
                     "PersistentVolumeClaim.yaml", "PodDisruptionBudget.yaml", "Service.yaml"]
    for path in files:
        validate(["kubernetes-validate", "--strict", str(path)], tmp_path)
    # strict really rejects an unknown field
    bad = tmp_path / "bad.yaml"
    deployment = yaml.safe_load((tmp_path / "3-Deployment.yaml").read_text()) if (tmp_path / "3-Deployment.yaml").exists() \
        else next(yaml.safe_load(p.read_text()) for p in files if p.name.endswith("Deployment.yaml"))
    deployment["spec"]["replicaz"] = 2
    bad.write_text(yaml.safe_dump(deployment))
    validate(["kubernetes-validate", "--strict", str(bad)], tmp_path, expect_ok=False)


@pytest.mark.parametrize("combo", combos(target="kubernetes"))
def test_kubernetes_deployment_keeps_the_contract(combo: str, tmp_path: Path) -> None:
    root, name, port = rendered(combo), answers(combo)["project_name"], answers(combo)["http_port"]
    docs = {p.name.split("-", 1)[1][:-5]: yaml.safe_load(p.read_text()) for p in _kustomize(root, tmp_path)}
    config = tomllib.loads((root / "cfg" / "config.toml").read_text())
    spec = docs["Deployment"]["spec"]
    pod = spec["template"]["spec"]
    (main,) = pod["containers"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert pod["terminationGracePeriodSeconds"] > config["shutdown"]["timeout_secs"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/.well-known/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/.well-known/ready"
    assert main["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in (f"/srv/app/{name}/log", f"/srv/app/{name}/tmp", "/srv/run", "/srv/key"):
        assert "emptyDir" in volumes[mounts[path]], path
    # the data dir outlives the pod: a claim, which the backup job mounts too
    assert volumes[mounts[f"/srv/data/{name}"]]["persistentVolumeClaim"]["claimName"] == f"{name}-data"
    assert volumes[mounts[f"/srv/app/{name}/cfg"]]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert docs["ConfigMap"]["data"]["config.toml"] == (root / "cfg" / "config.toml").read_text()
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret["secretName"] == f"{name}-secrets" and secret["defaultMode"] in (0o400, 0o440, 0o600)
    # the init container puts the secrets at ${PREFIX}/key/env.toml with mode 0600
    (init,) = pod["initContainers"]
    assert "install -m 0600" in init["command"][-1] and "/srv/key/env.toml" in init["command"][-1]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["PREFIX"] == "/srv"
    # the kubelet collects stderr: no log file, no line twice
    assert env[f"{name.replace('-', '_').upper()}_LOG__TARGET"] == "stderr"
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == spec["selector"]
    assert docs["Service"]["spec"]["selector"] == spec["selector"]["matchLabels"]


@pytest.mark.parametrize("combo", combos(target="kubernetes"))
def test_kubernetes_backup_cronjob_backs_up_the_data_claim(combo: str, tmp_path: Path) -> None:
    root, name = rendered(combo), answers(combo)["project_name"]
    docs = [yaml.safe_load(p.read_text()) for p in _kustomize(root, tmp_path)]
    (cronjob,) = [d for d in docs if d["kind"] == "CronJob"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {f"{name}-data", f"{name}-backup"}
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (job,) = pod["containers"]
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    assert job["image"] == main["image"] and job["args"] == ["backup", "--config", "cfg/config.toml"]
    assert job["workingDir"] == main["workingDir"]
    assert job["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m for m in job["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = mounts[f"/srv/data/{name}"]
    assert data.get("readOnly") is True, "the backup only reads the data"
    assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] == f"{name}-data"
    backup = mounts[f"/srv/backup/{name}"]
    assert volumes[backup["name"]]["persistentVolumeClaim"]["claimName"] == f"{name}-backup"
    assert volumes[mounts[f"/srv/app/{name}/cfg"]["name"]]["configMap"]["name"].startswith(f"{name}-config-")
    # the default backup.dir and paths.data_dir are where the claims are mounted
    config = tomllib.loads((root / "cfg" / "config.toml").read_text())
    assert config["backup"]["dir"] == f"${{PREFIX}}/backup/{name}" and config["paths"]["data_dir"] == f"${{PREFIX}}/data/{name}"


@pytest.mark.parametrize("combo", combos(target="kubernetes"))
def test_kubernetes_requests_and_limits_are_consistent(combo: str, tmp_path: Path) -> None:
    docs = {p.name.split("-", 1)[1][:-5]: yaml.safe_load(p.read_text()) for p in _kustomize(rendered(combo), tmp_path)}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources.get(kind, {})) == {"cpu", "memory"}, f"{container['name']}: {kind} {resources}"
        assert _mib(resources["limits"]["memory"]) >= _mib(resources["requests"]["memory"]), container["name"]
        assert _cores(resources["limits"]["cpu"]) >= _cores(resources["requests"]["cpu"]), container["name"]
    (main,) = pod["containers"]
    idle = IDLE_RSS_MIB[answers(combo)["flavour"]]
    assert _mib(main["resources"]["requests"]["memory"]) >= 2 * idle
    # the same caps as the systemd unit of the same project
    unit = _directives(_unit(combo))
    assert _mib(main["resources"]["limits"]["memory"]) == _mib(unit["MemoryMax"][0])
    assert _cores(main["resources"]["limits"]["cpu"]) == _cores(unit["CPUQuota"][0])
    # and the comment says how to size them
    text = (rendered(combo) / "deploy" / "kubernetes" / "base" / "deployment.yaml").read_text()
    assert "Size them from" in text and "requests:" in text


@pytest.mark.parametrize("combo", combos(target="kubernetes"))
def test_kubernetes_config_is_the_projects_config(combo: str) -> None:
    root = rendered(combo)
    base = root / "deploy" / "kubernetes" / "base" / "config.toml"
    assert base.read_text() == (root / "cfg" / "config.toml").read_text()


# ---------------------------------------------------------------------- container
@pytest.mark.parametrize("combo", combos(target="container"))
def test_containerfile_is_hadolint_clean(combo: str) -> None:
    root = rendered(combo)
    validate(["hadolint", "deploy/container/Containerfile"], root)


@pytest.mark.parametrize("combo", combos(target="container"))
def test_containerfile_builds_from_files_the_project_has(combo: str, tmp_path: Path) -> None:
    # No container engine runs here: check what the build would read and run.
    root, name = rendered(combo), answers(combo)["project_name"]
    text = (root / "deploy" / "container" / "Containerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2, "a build stage and a small run stage"
    assert all(":" in image and not image.endswith(":latest") for image in stages)
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (root / source).exists(), f"COPY {source}: not in the generated project"
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert f"EXPOSE {answers(combo)['http_port']}" in text
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    assert f'ENTRYPOINT ["{name}"]' in text
    ignored = (root / ".dockerignore").read_text().split()
    assert ".git" in ignored and (".venv" in ignored if answers(combo)["flavour"] == "python" else "target" in ignored)
    # the RUN scripts are shell: shellcheck them
    for index, script in enumerate(re.findall(r"^RUN ((?:.*\\\n)*.*)$", text, re.MULTILINE)):
        path = tmp_path / f"run{index}.sh"
        path.write_text("#!/bin/sh\n" + script + "\n")
        validate(["shellcheck", str(path)], tmp_path)


@pytest.mark.parametrize("combo", combos(target="container"))
def test_container_run_limits_are_documented(combo: str) -> None:
    root, name = rendered(combo), answers(combo)["project_name"]
    text = (root / "deploy" / "container" / "Containerfile").read_text()
    (line,) = re.findall(r"^#\s+(podman run .+)$", text, re.MULTILINE)
    flags = dict(re.findall(r"--([\w-]+)=(\S+)", line))
    assert {"memory", "memory-swap", "pids-limit", "cpus"} <= set(flags), line
    # the same caps as the systemd unit (both container renders have one)
    unit = _directives(_unit(combo))
    assert _mib(flags["memory"]) == _mib(flags["memory-swap"]) == _mib(unit["MemoryMax"][0])
    assert int(flags["pids-limit"]) == int(unit["TasksMax"][0])
    assert _cores(flags["cpus"]) == _cores(unit["CPUQuota"][0])
    assert line.endswith(f" {name}")
    # the README's container section gives the same command
    readme = (root / "README.md").read_text()
    assert line in readme, "the README's container section has no `podman run` line with the limits"


# ---------------------------------------------------------------------- ansible
def _ansible_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "HOME": str(tmp_path)}


@pytest.mark.parametrize("combo", combos(target="ansible"))
def test_ansible_syntax_and_lint(combo: str, tmp_path: Path) -> None:
    playbooks = rendered(combo) / "deploy" / "ansible"
    work = tmp_path / "ansible"
    shutil.copytree(playbooks, work)
    shutil.copy2(rendered(combo) / ".yamllint.yml", work / ".yamllint.yml")
    proc = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "deploy.yml"],
                          cwd=work, env=_ansible_env(tmp_path), text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lint = subprocess.run([tool("ansible-lint"), "--offline", "--profile", "production", "."],
                          cwd=work, env=_ansible_env(tmp_path), text=True, capture_output=True, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Profile 'production' was required, and it passed" in lint.stdout + lint.stderr


@pytest.mark.parametrize("combo", combos(target="ansible"))
def test_ansible_templates_render_the_deploy_files(combo: str) -> None:
    """The role's unit and logrotate templates give the files of deploy/ for PREFIX=/srv."""
    root, name = rendered(combo), answers(combo)["project_name"]
    templates = root / "deploy" / "ansible" / "roles" / "service" / "templates"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    group_vars = yaml.safe_load((root / "deploy" / "ansible" / "group_vars" / "all" / "service.yml").read_text())
    values = {"service_workdir": f"/srv/app/{name}", "service_prefix": "/srv", "service_user": name, "service_group": name,
              **{key: value for key, value in group_vars.items() if key.startswith(("service_memory_", "service_tasks_",
                                                                                   "service_cpu_"))}}
    unit = env.from_string((templates / "service.j2").read_text()).render(values)
    rules = env.from_string((templates / "logrotate.j2").read_text()).render(values)
    assert unit.strip() in (root / "deploy" / "systemd" / f"{name}.service").read_text()
    assert rules.strip() in (root / "deploy" / "logrotate" / name).read_text()
    for kind in ("service", "timer"):
        text = env.from_string((templates / f"backup.{kind}.j2").read_text()).render(
            {**values, "service_backup_on_calendar": "daily"})
        assert text.strip() in (root / "deploy" / "systemd" / f"{name}-backup.{kind}").read_text(), kind


@pytest.mark.parametrize("combo", combos(target="ansible"))
def test_ansible_playbook_rolls_one_host_at_a_time_and_waits_for_ready(combo: str) -> None:
    ansible = rendered(combo) / "deploy" / "ansible"
    (play,) = yaml.safe_load((ansible / "deploy.yml").read_text())
    assert play["serial"] == 1 and play["max_fail_percentage"] == 0
    tasks = yaml.safe_load((ansible / "roles" / "service" / "tasks" / "main.yml").read_text())
    modules = {key for task in tasks for key in task if key.startswith("ansible.")}
    inner = [t for task in tasks for t in task.get("block", [])]
    modules |= {key for task in inner for key in task if key.startswith("ansible.")}
    assert all(module.startswith("ansible.builtin.") for module in modules), modules
    (wait,) = [t for t in inner if "ansible.builtin.uri" in t]
    assert wait["ansible.builtin.uri"]["url"] == "{{ service_ready_url }}" and wait["retries"]
    defaults = yaml.safe_load((ansible / "roles" / "service" / "defaults" / "main.yml").read_text())
    assert defaults["service_ready_url"].endswith("/.well-known/ready")
    group_vars = yaml.safe_load((ansible / "group_vars" / "all" / "service.yml").read_text())
    limits = {"service_memory_high", "service_memory_max", "service_tasks_max", "service_cpu_quota"}
    assert {key: value for key, value in group_vars.items() if key not in limits} == {
        "service_name": answers(combo)["project_name"], "service_flavour": answers(combo)["flavour"],
        "service_http_port": answers(combo)["http_port"]}
    # the role's unit template reads the limits as variables, with the defaults of deploy/systemd
    assert set(group_vars) >= limits
    unit = _directives(_unit(combo))
    assert [str(group_vars[f"service_{key}"]) for key in ("memory_high", "memory_max", "tasks_max", "cpu_quota")] \
        == [unit[key][0] for key in ("MemoryHigh", "MemoryMax", "TasksMax", "CPUQuota")]
    template = (ansible / "roles" / "service" / "templates" / "service.j2").read_text()
    for key in ("MemoryHigh", "MemoryMax", "TasksMax", "CPUQuota"):
        assert re.search(rf"^{key}={{{{ service_\w+ }}}}$", template, re.MULTILINE), key


# ---------------------------------------------------------------------- README
INCLUDE = "{% include 'includes/readme-deploy.md.jinja' %}"


@pytest.fixture(scope="module")
def readme_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template, with the deploy sections included in README.md.jinja (as the marker line asks)."""
    from helpers import TEMPLATE  # noqa: PLC0415

    copy = tmp_path_factory.mktemp("readme") / "plumbline"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "bench"))
    readme = copy / "template" / "README.md.jinja"
    text = readme.read_text()
    if INCLUDE not in text:
        text = text.replace("<!-- deploy sections -->", INCLUDE) if "<!-- deploy sections -->" in text \
            else text + "\n" + INCLUDE + "\n"
        readme.write_text(text)
    return copy


@pytest.mark.parametrize("combo", list(COMBOS))
def test_readme_deploy_sections_point_at_files_the_project_has(readme_template: Path, tmp_path: Path,
                                                               combo: str) -> None:
    from copier import run_copy  # noqa: PLC0415

    from helpers import DEFAULTS  # noqa: PLC0415

    root = tmp_path / "project"
    # Copier resolves includes from the template's root (the repository), not from template/
    run_copy(str(readme_template), str(root), data={**DEFAULTS, **COMBOS[combo]}, defaults=True, unsafe=True,
             quiet=True)
    readme = (root / "README.md").read_text()
    chosen = answers(combo)["deploy_targets"]
    assert "## Deployment checklist" in readme
    for heading, target in (("### systemd", "systemd"), ("### Ansible", "ansible"),
                            ("### Kubernetes", "kubernetes"), ("### Container image", "container")):
        wanted = target in chosen or (target == "systemd" and "ansible" in chosen)
        assert (heading in readme) == wanted, heading
    for area in ("configuration", "logging", "monitoring", "storage", "security", "operations"):
        assert f"| {area} |" in readme, area
    for path in set(re.findall(r"`((?:deploy|\.github|cfg)/[^`\s]*|\.gitlab-ci\.yml)`", readme)):
        assert (root / path).exists(), f"README points at {path}, which the project does not have"


# The ops standard's deployment checklist, as committed in tests/data (the standard lives outside the repository).
CHECKLIST_FILE = Path(__file__).parent / "data" / "ops-checklist.md"
# Items the generated service does not fulfil yet: their row must say so and what to do instead.
# Every item is provided: its row may not say "not provided" (but "not provided for this
# deploy choice", when a deploy target that would do it was not chosen).
NOT_PROVIDED: set[tuple[str, str]] = set()


def _checklist() -> list[tuple[str, str]]:
    """(area, item) for each item of the checklist, areas in lower case, items as the standard writes them."""
    items = []
    for area, rest in re.findall(r"^\d+\. \*\*(\w+)\*\*: (.+)$", CHECKLIST_FILE.read_text(), re.MULTILINE):
        items += [(area.lower(), item.strip()) for item in rest.split(",")]
    return items


def _checklist_row_list(readme: str) -> list[tuple[str, str, str]]:
    """The rows of the README's deployment checklist, in order: (area, item without backticks, cell)."""
    section = readme.split("## Deployment checklist", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z]+) \| (.+?) \| (.+) \|$", section, re.MULTILINE)
    return [(area, item.replace("`", "").lower(), cell) for area, item, cell in rows]


def _checklist_rows(readme: str) -> dict[tuple[str, str], str]:
    """The rows of the README's deployment checklist: (area, item without backticks) -> the "fulfilled by" cell."""
    return {(area, item): cell for area, item, cell in _checklist_row_list(readme)}


def _missing_rows(readme: str) -> list[tuple[str, str]]:
    rows = _checklist_rows(readme)
    return [(area, item) for area, item in _checklist() if (area, item.lower()) not in rows]


def test_checklist_copy_has_the_six_sections_of_the_standard() -> None:
    items = _checklist()
    assert [area for area, _ in items[::4]] == ["configuration", "logging", "monitoring", "storage", "security",
                                                 "operations"]
    assert len(items) == 24 and len(set(items)) == 24
    assert ("storage", "${PREFIX}/data/<project>/ directory") in items and ("operations", "resource limits") in items
    assert ("security", "TLS for network services") in items and ("security", "audit logging") in items
    assert NOT_PROVIDED <= set(items)
    # the storage items are all provided now: backups and retention included
    assert not {item for item in NOT_PROVIDED if item[0] == "storage"}


@pytest.mark.parametrize("combo", list(COMBOS))
def test_readme_checklist_has_a_row_for_every_item_of_the_standard(combo: str) -> None:
    root = rendered(combo)
    readme = (root / "README.md").read_text()
    assert _missing_rows(readme) == [], "checklist items without a row in the README"
    rows = _checklist_rows(readme)
    for area, item in _checklist():
        cell = rows[(area, item.lower())]
        # every cell names a file, a key or a command; an unfulfilled item says so, then what to do instead
        assert "`" in cell, f"{area} / {item}: the cell names no file or command: {cell}"
        if (area, item) in NOT_PROVIDED:
            assert cell.startswith("**not provided**: ") and len(cell) > 80, f"{area} / {item}: {cell}"
        else:
            assert "**not provided**:" not in cell, f"{area} / {item} is provided, yet its cell says not: {cell}"
        if cell.startswith("**not provided**"):
            assert "`" in cell.split("**not provided**", 1)[1], f"{area} / {item}: says not what to do: {cell}"
    # the files of the source tree a cell names exist (deploy/ and cfg/ are checked by the test above)
    for path in {path for path in re.findall(r"`(src/[^`\s]+)`", readme) if "*" not in path}:
        assert (root / path).exists(), f"README points at {path}, which the project does not have"
    # one row per item, and the items come first, in the standard's order (the template's own rows follow)
    listed = [(area, item) for area, item, _ in _checklist_row_list(readme)]
    wanted = [(area, item.lower()) for area, item in _checklist()]
    assert listed[: len(wanted)] == wanted, "the checklist rows are not the standard's items, in its order"
    assert len(set(listed)) == len(listed), "an item has two rows"
    # the check finds any dropped row: each item removed in turn is reported, and only it
    for area, item in _checklist():
        dropped = "\n".join(
            line for line in readme.splitlines() if not line.lower().replace("`", "").startswith(f"| {area} | {item.lower()} |")
        )
        assert _missing_rows(dropped) == [(area, item)], (area, item)
