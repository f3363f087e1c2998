"""Sizes of the demo: the full run (about 10 minutes on 2 CPU cores) and the ``--quick`` run.

What each size was chosen from is in ``docs/EXPERIMENTS.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from duplus.errors import ConfigError


@dataclass
class DemoSettings:
    cases: int = 20  # training cases per phantom dataset
    test_cases: int = 2  # held-out cases per dataset
    # the held-out cases and the cohort: a seed no setting of the demo was ever chosen on
    test_seed: int = 2025
    shape: int = 96  # phantom grid (96 mm field of view)
    cohort: int = 160  # patients in the prognosis cohort
    cohort_shape: int = 48
    iterations: int = 900
    steps_per_epoch: int = 225
    patch_size: list[int] = field(default_factory=lambda: [40, 40, 40])
    val_every: int = 2
    adapt_cases: int = 96  # the adaptation set (Task02, the pancreas): longer runs need more cases
    adapt_test_cases: int = 24
    adapt_val_fraction: float = 0.1  # 10 of the 96 cases validate the adapter, all of them
    adapt_iterations: int = 1500
    adapt_lr: float = 0.006
    # task-scoped (the default network_scope): the original targets keep the base network
    adapt_train: list[str] = field(default_factory=lambda: ["text_lora", "head", "backbone_lora"])
    prognosis_epochs: int = 10  # LoRA fits dominate the demo's prognosis time
    prognosis_folds: int = 3
    prognosis_repeats: int = 1
    paraphrases: int = 6
    eval_limit: int | None = None  # test cases per dataset (None = all)
    overlap: float = 0.25
    threads: int = 2
    seed: int = 0
    quick: bool = False

    @classmethod
    def full(cls) -> DemoSettings:
        return cls()

    @classmethod
    def smoke(cls) -> DemoSettings:
        """A smoke run of about 2 minutes: tiny data, few steps; numbers are not meaningful."""
        return cls(
            cases=2,
            test_cases=1,
            shape=48,
            cohort=40,
            cohort_shape=32,
            iterations=12,
            steps_per_epoch=12,
            patch_size=[32, 32, 32],
            val_every=1,
            adapt_cases=3,  # one more than the others: the quick test sees that the sizes apply
            adapt_test_cases=1,
            adapt_val_fraction=0.25,
            adapt_iterations=4,
            prognosis_epochs=2,
            prognosis_folds=2,
            paraphrases=5,
            eval_limit=1,
            quick=True,
        )

    def with_iterations(self, iterations: int) -> DemoSettings:
        """These settings with ``iterations`` training steps, validating as often relative to them."""
        if iterations < 1:
            raise ConfigError(f"demo: need iterations >= 1; got {iterations}")
        spe = max(1, round(self.steps_per_epoch * iterations / self.iterations))
        return replace(self, iterations=iterations, steps_per_epoch=spe)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
