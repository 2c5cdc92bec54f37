"""One module per operational concern (the platform), and the service part in `service/`.

- `about`: the service's name, prefixes and version
- `config`: three configuration layers, validated before anything starts
- `logging`: the contract's log line, the RUST_LOG-style filter, reopening on SIGHUP
- `metrics`: the Prometheus registry, the request counter, the service part's metrics
- `http`: the aiohttp server (routes, their rules, JSON helpers)
- `health`: liveness and readiness
- `pidfile`: the locked PID file
- `heartbeat`: the heartbeat file written by the main loop
- `shutdown`: signals and the draining deadline
- `retry`: backoff for transient errors
- `errors`: the three error kinds and their classification
- `context`: what the platform hands the service part (settings, metrics, HTTP client...)
- `sd_notify`: systemd readiness and watchdog notifications
- `telemetry`: OpenTelemetry traces over OTLP/HTTP (only in services generated with it)
- `app`: `build()` then `run_until_stopped()`
- `main`: the command line
- `service`: the service part, the team's own code (settings, api, jobs)
"""
