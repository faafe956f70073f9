"""Observability tests: metrics, health, /rules, and the Grafana dashboard against Prometheus."""
