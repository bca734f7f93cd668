"""Telemetry: what Apiary tells operators about itself — OpenTelemetry traces (``tracing``),
Prometheus metrics (``metrics``) and the trace ids in log lines. Off or cheap by default: no
exporter endpoint, no spans; metrics are read from counters the components already keep."""
