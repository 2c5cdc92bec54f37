"""The service part: the team's code, the one package the platform imports from.

- `settings`: the service's configuration sections (`[work]`)
- `api`: the service's HTTP routes (`GET /v1/value`)
- `jobs`: the example periodic job (prepare, finalize, last good value)
"""
