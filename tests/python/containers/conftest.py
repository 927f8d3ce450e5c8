"""Markers for checks that need code from other branches (see scripts/container-tests.sh)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_feature_store: needs the ferrum-feature-store binary and entity ids")
    config.addinivalue_line("markers", "needs_metrics: needs the server's /metrics route")
