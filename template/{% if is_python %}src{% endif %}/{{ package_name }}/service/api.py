"""The service's HTTP routes: `GET /v1/value`, the example job's last good value."""

from __future__ import annotations
