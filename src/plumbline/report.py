"""Output of `plumbline audit`: a table for people, JSON for programs (schema in docs/audit.md)."""

from __future__ import annotations

import json
from typing import Any

from plumbline import __version__
from plumbline.audit import ProjectReport

SCHEMA = "plumbline-audit/1"
EXIT_IN_LINE, EXIT_FAILS, EXIT_ERROR = 0, 1, 2


def exit_code(reports: list[ProjectReport]) -> int:
    if any(r.status == "error" for r in reports):
        return EXIT_ERROR
    if any(r.status == "fails" for r in reports):
        return EXIT_FAILS
    return EXIT_IN_LINE


def to_json(reports: list[ProjectReport]) -> str:
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "tool_version": __version__,
        "exit_code": exit_code(reports),
        "summary": {
            "projects": len(reports),
            "in_line": sum(r.status == "in line" for r in reports),
            "failing": sum(r.status == "fails" for r in reports),
            "errors": sum(r.status == "error" for r in reports),
        },
        "projects": [r.as_dict() for r in reports],
    }
    return json.dumps(document, indent=2) + "\n"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def _release(report: ProjectReport) -> str:
    t = report.template
    if t is None:
        return "-"
    return t["release"] or f"{t['commit']} (unreleased)"


def project_table(report: ProjectReport, markdown: bool = False) -> str:
    """One project: a line that says what it is, then one row per finding."""
    t = report.template
    if report.error:
        head = f"{report.source}: cannot audit: {report.error}"
    elif t is None:
        head = f"{report.source}: not generated from the template (no valid answers file)"
    else:
        head = (
            f"{report.source}: template {t['src_path']} at {_release(report)}, newest {t['newest'] or '-'}, {t['behind']} behind"
        )
    edited = sum(f.state == "edited" for f in report.files)
    owned = len(report.files)
    if owned:
        head += f"; {owned} template-owned files, {owned - edited - sum(f.state == 'missing' for f in report.files)} identical"
    rows = [[f.level.upper(), f.rule, f.path, f.message] for f in report.findings]
    if report.update is not None:
        files = report.update["files"]
        rows.append(
            [
                "INFO",
                "update",
                "-",
                f"copier update to {report.update['to']} changes {len(files)} files: "
                + ", ".join(f"{f['path']} ({f['state']})" for f in files[:6])
                + (", ..." if len(files) > 6 else ""),
            ]
        )
    status = f"status: {report.status}"
    if not rows:
        return f"{head}\n{status}: every rule holds\n"
    return f"{head}\n\n{_table(['LEVEL', 'RULE', 'PATH', 'DETAIL'], rows, markdown)}\n{status}\n"


def fleet_table(reports: list[ProjectReport], markdown: bool = False) -> str:
    """A fleet: one row per project."""
    rows = []
    for r in reports:
        fails = [f for f in r.findings if f.level == "fail"]
        rules = sorted({f.rule for f in fails})
        rows.append(
            [
                r.source,
                _release(r),
                str(r.template["behind"]) if r.template else "-",
                str(sum(f.state == "edited" for f in r.files)),
                str(sum(f.state == "missing" for f in r.files)),
                r.error or (", ".join(rules) if rules else "-"),
                r.status,
            ]
        )
    table = _table(["PROJECT", "RELEASE", "BEHIND", "EDITED", "MISSING", "FAILING RULES", "STATUS"], rows, markdown)
    counts = {s: sum(r.status == s for r in reports) for s in ("in line", "fails", "error")}
    return (
        table
        + f"\n{len(reports)} projects: {counts['in line']} in line, {counts['fails']} failing, {counts['error']} not audited\n"
    )
