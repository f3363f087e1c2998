"""Shared test set-up: small CPU thread counts and deterministic seeds."""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a shared 2-core machine that makes everything several
# times slower. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("DUPLUS_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``DUPLUS_SKIP_SLOW=1`` skips the tests marked ``slow`` (CI runs them)."""
    if os.environ.get("DUPLUS_SKIP_SLOW", "0") not in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="DUPLUS_SKIP_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
