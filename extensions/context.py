"""The context hook and filters that copier.yml loads through copier-template-extensions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jinja2.ext import Extension

from copier_template_extensions import ContextHook

sys.path.insert(0, str(Path(__file__).parent))
import names  # noqa: E402  (loaded by file path, next to this module)


class DerivedNames(ContextHook):
    """Adds the derived names (package, env prefix, flags...) to every render."""

    def hook(self, context: dict[str, Any]) -> None:
        context.update(names.derived_names(context))


class AnswerChecks(Extension):
    """Filters used by the validators and defaults in copier.yml."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.filters["project_name_error"] = names.project_name_error
        environment.filters["email_error"] = names.email_error
        environment.filters["http_port_error"] = names.http_port_error
        environment.filters["non_empty_error"] = names.non_empty_error
        environment.filters["deploy_targets_error"] = names.deploy_targets_error
        environment.filters["folder_to_project_name"] = names.folder_to_project_name
