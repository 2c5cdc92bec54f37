"""`plumbline audit` and `plumbline check-service`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from plumbline import __version__
from plumbline.errors import AuditError

EPILOG = "Exit codes: 0 in line, 1 a rule fails, 2 the audit cannot run. Docs: docs/audit.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plumbline", description="Audit and check services made from the plumbline template.")
    parser.add_argument("--version", action="version", version=f"plumbline {__version__}")
    sub = parser.add_subparsers(dest="subcommand", required=True)

    audit = sub.add_parser("audit", help="audit generated projects against their template and the standard", epilog=EPILOG)
    audit.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="a generated project's folder")
    audit.add_argument("--repos", type=Path, metavar="FILE", help="a file of git URLs, one a line: clone and audit each")
    audit.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    audit.add_argument("--template", metavar="SRC", help="render from this template clone or URL instead of each _src_path")
    audit.add_argument("--allow-edits", action="store_true", help="an edited template-owned file is a warning, not a failure")
    audit.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel renders (default: the cores)")
    audit.add_argument("--clone-jobs", type=int, default=8, help="parallel clones in --repos mode (default: 8)")
    audit.add_argument("--cache", type=Path, metavar="DIR", help="keep clones and template trees here between runs")

    check = sub.add_parser(
        "check-service",
        help="run the template's contract suite against a built service",
        epilog="Exit codes: 0 every contract test passed, 1 a test failed, 2 the check cannot run.",
    )
    target = check.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--command", dest="service_command", metavar="CMD", help="the service's command line, e.g. '.venv/bin/order-router'"
    )
    target.add_argument("--url", metavar="URL", help="a service already running, http://HOST:PORT: its HTTP checks only")
    check.add_argument(
        "--project", type=Path, default=Path("."), help="the project folder: cfg/ and .copier-answers.yml (default: .)"
    )
    check.add_argument("--name", help="the service's name (default: project_name from the answers file)")
    check.add_argument("--flavour", choices=["python", "rust"], help="default: from the answers file")
    check.add_argument(
        "--example",
        choices=["auto", "yes", "no"],
        default="auto",
        help="the checks of the template's example service part ([work] job, GET /v1/value): auto runs them when "
        "cfg/config.toml has the example's [work] keys and skips them, saying so, when the team replaced it",
    )
    check.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments (-k, -x ...)")
    return parser


def _audit(args: argparse.Namespace) -> int:
    from plumbline.audit import Auditor, audit_fleet, audit_projects, read_repo_list
    from plumbline.report import exit_code, fleet_table, project_table, to_json

    if not args.paths and not args.repos:
        raise AuditError("name at least one project folder, or --repos FILE")
    with tempfile.TemporaryDirectory(prefix="plumbline-audit-") as tmp:
        cache = args.cache or Path(tmp)
        auditor = Auditor(cache, jobs=max(1, args.jobs), template=args.template, allow_edits=args.allow_edits)
        try:
            for path in args.paths:
                if not path.is_dir():
                    raise AuditError(f"{path} is not a directory")
            fleet = len(args.paths) > 1 or bool(args.repos)
            reports = audit_projects(auditor, [(p, str(p)) for p in args.paths], fleet)
            if args.repos:
                reports += audit_fleet(auditor, read_repo_list(args.repos), cache / "projects", args.clone_jobs)
        finally:
            auditor.renderer.close()
    if args.format == "json":
        sys.stdout.write(to_json(reports))
    elif fleet:
        sys.stdout.write(fleet_table(reports, markdown=args.format == "markdown"))
    else:
        sys.stdout.write(project_table(reports[0], markdown=args.format == "markdown"))
    for r in reports:
        if r.error:
            print(f"plumbline audit: error: {r.source}: {r.error}", file=sys.stderr)
    return exit_code(reports)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.subcommand == "audit":
            return _audit(args)
        from plumbline.check_service import check_service

        return check_service(args)
    except AuditError as exc:
        print(f"plumbline {args.subcommand}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
