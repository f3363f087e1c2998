"""Run under ``torchrun --nproc_per_node 2``: train with the real Trainer and record, per step, each
rank's own gradient (no all-reduce), the gradient DDP hands the optimizer and the ranks' mean loss;
after the run, every rank's weights. Rank 0 writes ``ddp_probe.json`` with the comparisons and
``ddp_weights.pt`` with rank 0's final weights.

Usage: ``torchrun --standalone --nproc_per_node 2 ddp_probe.py CONFIG.yaml RUN_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from duplus.training.api import resolve_train_config
from duplus.training.trainer import Trainer


def _flat(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Every parameter's gradient, flattened; zeros where it has none (a stem this rank's batch
    did not use), so all ranks gather tensors of one size."""
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten() for p in params]
    )


class Probe(Trainer):
    """The Trainer, plus the local gradient of each step computed without DDP's synchronisation."""

    records: list[dict[str, float]] = []

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        mask, index = batch["label_mask"].to(self.device), batch["modality_index"].to(self.device)
        position = batch["position"].to(self.device) if "position" in batch else None
        t1, t2 = self.embed_prompts(batch["t1"], batch["modality"], batch["targets"], sample=False)
        self.optimizer.zero_grad(set_to_none=True)
        with self.net.no_sync():  # this rank's gradient alone
            self.loss_fn(self.net(image, index, t1, t2, position).float(), label, mask).backward()
        local = _flat(params).clone()
        synced: list[torch.Tensor] = []
        real_clip = torch.nn.utils.clip_grad_norm_

        def capture(parameters: Any, *args: Any, **kwargs: Any) -> Any:  # before clipping
            synced.append(_flat(params).clone())
            return real_clip(parameters, *args, **kwargs)

        torch.nn.utils.clip_grad_norm_ = capture  # type: ignore[assignment]
        try:
            out = super().train_step(batch)
        finally:
            torch.nn.utils.clip_grad_norm_ = real_clip  # type: ignore[assignment]
        gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        loss = torch.tensor([out["loss"]], dtype=torch.float64)
        dist.all_reduce(loss)
        mean = torch.stack(gathered).mean(0)
        others = [g for r, g in enumerate(gathered) if r != dist.get_rank()]
        self.records.append(
            {
                "ddp_vs_mean_of_local": float((synced[0] - mean).abs().max()),
                "local_vs_other_rank": float((local - others[0]).abs().max()),
                "grad_scale": float(mean.abs().max()),
                "loss_mean_over_ranks": float(loss) / dist.get_world_size(),
            }
        )
        return out


def main() -> None:
    cfg = resolve_train_config(sys.argv[1])
    run = Path(sys.argv[2])
    probe = Probe(cfg, run, progress=False)
    probe.fit()
    weights = torch.cat([p.detach().flatten() for p in probe.model.parameters()])
    gathered = [torch.zeros_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    if dist.get_rank() == 0:
        result = {
            "world_size": dist.get_world_size(),
            "steps": probe.records,
            "weights_max_diff_across_ranks": float((gathered[0] - gathered[1]).abs().max()),
        }
        (run / "ddp_probe.json").write_text(json.dumps(result, indent=2))
        torch.save(probe.model.state_dict(), run / "ddp_weights.pt")
    dist.barrier()


if __name__ == "__main__":
    main()
