"""The generated playbook, run for real against localhost into a scratch PREFIX."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_renders import tool
from helpers import generate, run
from services import BuiltService

SECRETS = '[work]\nupstream_token = "s3cret-token"\n'


def _playbook(cwd: Path, inventory: Path, extra: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([tool("ansible-playbook"), "-i", str(inventory), "deploy.yml", "-e", f"@{extra}"],
                          cwd=cwd, env=env, text=True, capture_output=True, timeout=900)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_playbook_installs_the_layout_into_a_scratch_prefix(service_build: BuiltService, tmp_path: Path) -> None:
    # Arrange: the project's ansible files, the artifact the release job would produce
    name = service_build.name
    project = generate(tmp_path / "project", **{**service_build.answers, "deploy_targets": ["ansible"]})
    if service_build.flavour == "python":
        run(["uv", "build", "--wheel", "--out-dir", str(tmp_path / "dist")], cwd=project, timeout=600)
        (artifact,) = (tmp_path / "dist").glob("*.whl")
    else:
        artifact = service_build.binary
    prefix, etc = tmp_path / "prefix", tmp_path / "etc"
    etc.mkdir()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"service": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "ansible_become": False,
        # what needs systemd (enable, start, readiness wait, handlers) is skipped; users too
        "service_systemd": False,
        "service_manage_user": False,
        "service_user": "root",
        "service_group": "root",
        "service_prefix": str(prefix),
        "service_unit_dir": str(etc),
        "service_logrotate_dir": str(etc),
        "service_artifact": str(artifact),
        "service_build_commit": "abc1234",
        "vault_service_secrets_toml": SECRETS,
    }))

    # Act
    first = _playbook(project / "deploy" / "ansible", inventory, extra, tmp_path)
    again = _playbook(project / "deploy" / "ansible", inventory, extra, tmp_path)

    # Assert: the layout and its modes
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert "changed=0" in again.stdout, f"a second run changed something:\n{again.stdout[-4000:]}"
    workdir = prefix / "app" / name
    assert _mode(prefix / "key") == 0o700
    assert _mode(prefix / "key" / "env.toml") == 0o600
    assert (prefix / "key" / "env.toml").read_text() == SECRETS
    assert _mode(prefix / "data" / name) == 0o750
    assert (prefix / "run").is_dir()
    for sub in ("log", "tmp"):
        assert _mode(workdir / sub) == 0o750
    assert (workdir / "cfg" / "config.toml").read_text() == (project / "cfg" / "config.toml").read_text()
    assert (workdir / "release.env").read_text() == "BUILD_COMMIT=abc1234\n"
    unit = (etc / f"{name}.service").read_text()
    assert f"WorkingDirectory={workdir}\n" in unit and f"Environment=PREFIX={prefix}\n" in unit
    # the resource limits come from the playbook's group_vars
    limits = dict(line.split("=", 1) for line in unit.splitlines()
                  if line.startswith(("MemoryMax=", "TasksMax=", "CPUQuota=")))
    assert set(limits) == {"MemoryMax", "TasksMax", "CPUQuota"} and "{{" not in "".join(limits.values()), limits
    assert f"{workdir}/log/{name}.log {{" in (etc / name).read_text()
    # the backup timer and its service, and the backup dir they write
    backup_unit = (etc / f"{name}-backup.service").read_text()
    assert f"ReadWritePaths={prefix}/backup/{name}\n" in backup_unit and " backup --config " in backup_unit
    assert "OnCalendar=daily\n" in (etc / f"{name}-backup.timer").read_text()
    assert _mode(prefix / "backup" / name) == 0o750

    # the installed service accepts the installed configuration and secrets
    binary = workdir / (".venv/bin" if service_build.flavour == "python" else "bin") / name
    check = subprocess.run([str(binary), "check-config"], cwd=workdir, text=True, capture_output=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "PREFIX": str(prefix)})
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'work.upstream_token = "[redacted]" (secrets)' in check.stdout
    assert f'paths.pid_file = "{prefix}/run/{name}.pid" (base)' in check.stdout

    # what the timer runs works on the installed layout
    backup = subprocess.run([str(binary), "backup"], cwd=workdir, text=True, capture_output=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "PREFIX": str(prefix)})
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert backup.stdout.startswith(f"backup written: {prefix}/backup/{name}/{name}-"), backup.stdout
