"""The collector's operator HTTP API, Prometheus metrics and dashboard: ``create_app(Services(...))``."""
from cloud.api.app import create_app
from cloud.api.backend import Services

__all__ = ["Services", "create_app"]
