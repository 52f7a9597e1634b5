"""Shared test setup: JAX on the CPU, quiet logs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need an accelerator: skipped where JAX runs on the CPU."""
    import pytest

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() in ("", "cpu"):
        skip = pytest.mark.skip(reason="needs an accelerator (JAX_PLATFORMS is cpu)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
