"""Import first in every benchmark: make sure OpenMP threads sleep when idle.

``OMP_WAIT_POLICY`` is read once, when the OpenMP runtime loads (at ``import torch``); with the
default (active) policy idle worker threads spin, which on a shared 2-core machine skews timings
several-fold. If the variable is not ``PASSIVE`` the script re-executes itself with it set
(and ``OMP_NUM_THREADS`` defaulting to 2), before torch is imported.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and not os.environ.get(
    "DUPLUS_BENCH_NO_REEXEC"
):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "DUPLUS_BENCH_NO_REEXEC": "1"}
    env.setdefault("OMP_NUM_THREADS", "2")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
