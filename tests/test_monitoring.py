"""Prometheus rules and the Grafana dashboard: valid, tested, and naming only real metrics."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from deploy_renders import COMBOS, answers, rendered, validate
from helpers import TEMPLATE
from services import BuiltService, Metrics, Service

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, functions, keywords and ranges aside)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # groupings
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("(") or match.group(0).lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group(0))
    return names


def test_metric_names_reads_what_it_should() -> None:
    expr = 'sum by (route) (rate(a_total{job="x", route!~"/\\\\.y"}[5m])) / on(job) b_seconds > 0.05 and up == 0'
    assert metric_names(expr) == {"a_total", "b_seconds", "up"}
    assert metric_names("time() - hb{job=\"$job\"}") == {"hb"}


def contract_metrics(prefix: str) -> set[str]:
    """The metric list of docs/contract-choices.md, with `<p>` expanded."""
    text = (TEMPLATE / "docs" / "contract-choices.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| (`.+?) \|", section, re.MULTILINE):
        names |= {name.replace("<p>_", prefix) for name in re.findall(r"`([^`]+)`", row)}
    return names


def used_metrics(root: Path) -> set[str]:
    """Every metric that the alert rules and the dashboard read."""
    used: set[str] = set()
    alerts = yaml.safe_load((root / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    dashboard = json.loads((root / "deploy" / "grafana" / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            used |= metric_names(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query["query"]))
    return used


@pytest.mark.parametrize("combo", list(COMBOS))
def test_prometheus_config_rules_and_rule_tests_pass(combo: str) -> None:
    prometheus = rendered(combo) / "deploy" / "prometheus"
    validate(["promtool", "check", "config", "scrape.yml"], prometheus)
    validate(["promtool", "check", "rules", "alerts.yml"], prometheus)
    validate(["promtool", "test", "rules", "tests/alerts_test.yml"], prometheus)
    scrape = yaml.safe_load((prometheus / "scrape.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == answers(combo)["project_name"]
    assert job["static_configs"][0]["targets"] == [f"localhost:{answers(combo)['http_port']}"]


def test_rule_tests_fail_when_a_threshold_drifts(tmp_path: Path) -> None:
    prometheus = rendered("python-github-systemd") / "deploy" / "prometheus"
    shutil.copytree(prometheus, tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "alerts.yml"
    alerts.write_text(alerts.read_text().replace('kind="persistent"}[10m]) > 10', 'kind="persistent"}[10m]) > 20'))
    validate(["promtool", "test", "rules", "tests/alerts_test.yml"], tmp_path / "prometheus", expect_ok=False)


# An alert's expression: what it measures, compared at the end with a number.
COMPARISON = re.compile(r"^(?P<lhs>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>-?\d+(?:\.\d+)?)\s*$", re.DOTALL)


def comparison(expr: str) -> tuple[str, str, float]:
    """`(what, operator, threshold)` of an alert expression, whitespace normalised."""
    match = COMPARISON.match(expr.strip())
    assert match, f"not `<expression> <op> <number>`: {expr!r}"
    return " ".join(match["lhs"].split()), match["op"], float(match["threshold"])


def test_comparison_parses_the_threshold_not_a_prefix_of_it() -> None:
    assert comparison("increase(x{a=\"b\"}[10m]) > 100") == ('increase(x{a="b"}[10m])', ">", 100.0)
    assert comparison("a / b\n  > 0.05\n") == ("a / b", ">", 0.05)
    assert comparison('x{s=~"5..", r!~"/y"} == 0') == ('x{s=~"5..", r!~"/y"}', "==", 0.0)


def documented_persistent_threshold() -> float:
    """The persistent-errors threshold that docs/contract-choices.md promises."""
    text = (TEMPLATE / "docs" / "contract-choices.md").read_text()
    (threshold,) = re.findall(r'`increase\(<p>_errors_total\{kind="persistent"\}\[10m\]\) > (\d+)`', text)
    return float(threshold)


@pytest.mark.parametrize("combo", ["python-github-systemd", "python-both-all"])
def test_alerts_cover_the_operational_failures(combo: str) -> None:
    root, prefix = rendered(combo), answers(combo)["project_name"].replace("-", "_") + "_"
    name = answers(combo)["project_name"]
    alerts = yaml.safe_load((root / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules = {rule["alert"]: rule for group in alerts["groups"] for rule in group["rules"]}
    found = {alert: (*comparison(rule["expr"]), rule.get("for")) for alert, rule in rules.items()}
    job = f'{{job="{name}"}}'
    persistent = documented_persistent_threshold()
    expected = {
        "Down": (f"up{job}", "==", 0.0, "2m"),
        # 3 heartbeat intervals of cfg/config.toml, as /.well-known/live
        "HeartbeatStale": (f"time() - {prefix}heartbeat_timestamp_seconds{job}", ">", 30.0, "1m"),
        "NotReady": (f"{prefix}ready{job}", "==", 0.0, "5m"),
        "Degraded": (f"{prefix}degraded{job}", "==", 1.0, "15m"),
        "PersistentErrors": (f'increase({prefix}errors_total{{job="{name}", kind="persistent"}}[10m])', ">",
                             persistent, None),
    }
    class_name = next(alert for alert in rules if alert.endswith("Down"))[: -len("Down")]
    for suffix, want in expected.items():
        assert found.get(class_name + suffix) == want, f"{class_name + suffix}: {found.get(class_name + suffix)} != {want}"
    ratio, op, threshold, duration = found[class_name + "HighErrorRatio"]
    assert (op, threshold, duration) == (">", 0.05, "10m"), found[class_name + "HighErrorRatio"]
    assert 'status=~"5.."' in ratio and ratio.count("/") >= 1
    assert f"more than {persistent:g} persistent errors" in rules[class_name + "PersistentErrors"]["annotations"]["summary"]
    for rule in (r for group in alerts["groups"] for r in group["rules"]):
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("combo", ["python-github-systemd", "python-both-all"])
def test_dashboard_and_alerts_name_only_contract_metrics(combo: str) -> None:
    root, prefix = rendered(combo), answers(combo)["project_name"].replace("-", "_") + "_"
    contract = contract_metrics(prefix)
    assert f"{prefix}http_requests_total" in contract and "process_resident_memory_bytes" in contract
    used = used_metrics(root)
    # `up` is Prometheus' own series for every scrape target
    assert used - {"up"} <= contract, f"not exported by the service: {sorted(used - {'up'} - contract)}"
    dashboard = json.loads((root / "deploy" / "grafana" / "dashboard.json").read_text())
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("request rate by route", "error", "ready", "degraded", "heartbeat", "retries", "memory", "cpu"):
        assert topic in titles, topic
    for metric in ("http_requests_total", "ready", "degraded", "heartbeat_timestamp_seconds", "retries_total"):
        assert prefix + metric in used
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= used


@pytest.mark.slow
def test_dashboard_and_alerts_name_only_metrics_the_running_service_exports(
    service_build: BuiltService, tmp_path: Path
) -> None:
    # the deploy files rendered into the built project itself (same name as the binary)
    svc = Service(service_build, tmp_path / "svc")
    try:
        svc.start()
        svc.get("/.well-known/ready")
        exported = Metrics.parse(svc.metrics())
    finally:
        svc.kill()
    names = set(exported.types) | {name for name, _, _ in exported.samples}
    used = used_metrics(service_build.project) - {"up"}
    assert used, "no metric found in the dashboard and alerts"
    assert used <= names, f"{service_build.flavour}: not in /metrics: {sorted(used - names)}"
