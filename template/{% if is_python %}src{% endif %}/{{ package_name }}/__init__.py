"""One module per operational concern.

- `about`: the service's name, prefixes and version
- `config`: three configuration layers, validated before anything starts
- `logging`: the contract's log line, the RUST_LOG-style filter, reopening on SIGHUP
- `metrics`: the Prometheus registry and the request counter
- `server`: the HTTP/1.1 server of the fixed routes
- `health`: liveness and readiness
- `pidfile`: the locked PID file
- `heartbeat`: the heartbeat file written by the main loop
- `shutdown`: signals and the draining deadline
- `retry`: backoff for transient errors
- `errors`: the three error kinds and their classification
- `service`: the service part (settings, api, jobs), the team's own code
- `sd_notify`: systemd readiness and watchdog notifications
- `telemetry`: OpenTelemetry traces over OTLP/HTTP (only in services generated with it)
- `app`: `build()` then `run_until_stopped()`
- `main`: the command line
"""
