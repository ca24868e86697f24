"""Worker health/readiness and Prometheus metrics."""
