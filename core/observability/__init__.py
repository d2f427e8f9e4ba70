"""What operators see of the gateway: logs, metrics, error reports.

* :mod:`.scrub` removes secrets and personal data from every log record and
  every error report before it leaves the process.
* :mod:`.logging` writes JSON lines with the request id, workspace and stage
  bound from context variables.
* :mod:`.sentry` reports errors to Sentry when ``SENTRY_DSN`` is set.
* :mod:`.metrics_http` serves ``GET /metrics`` (one process or many).
"""
