"""The one error type of the tool: the audit cannot run (exit 2), with a one-line message."""


class AuditError(Exception):
    """The audit cannot run: bad path, unreachable template, a tool missing. Exit code 2."""
