"""Shared test set-up: small CPU thread counts and deterministic seeds."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("DUPLUS_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
