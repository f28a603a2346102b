"""metricopt's losses in PyTorch Lightning under the DDP strategy.

A ``LightningModule`` that trains an MLP for F1 (``metricopt.ConfusionLoss``)
or average precision (``metricopt.APLoss``) on the Wisconsin breast-cancer data
(ships with scikit-learn), on ``--devices`` CPU processes:

    pip install lightning
    python examples/lightning_ddp.py --devices 2 --epochs 20

Nothing in the module is specific to several processes. Lightning starts the
processes and the ``torch.distributed`` group, gives each process its share of
the data (``DistributedSampler``) and wraps the model in DDP; every metricopt
loss then gathers the batch from every process itself (its ``distributed``
option, on by default), so the gradients are those of one process holding
the whole global batch.

Do not gather the logits with ``self.all_gather``: without
``sync_grads=True`` the gathered tensor carries no gradient at all, and with
it the shares must be equal-sized (it stacks them). The loss does the gather.

On the first training step the script checks this: it compares the
parameter gradients DDP produced with those of one process computing the loss
on the batch gathered from all processes, and, as a control, with what the
loss of each process's share alone would give (``distributed=False``). The
results (test F1 and AP of the trained model, the two gradient errors) are
printed as JSON by process 0 and written to ``--output``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from sklearn.metrics import average_precision_score, f1_score
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import metricopt
from metricopt.app.data import load_dataset, train_val_test_split
from metricopt.distributed import gather

LOSSES = {"f1": lambda distributed=True: metricopt.ConfusionLoss("f1", distributed=distributed),
          "ap": lambda distributed=True: metricopt.APLoss(distributed=distributed)}


def relative_error(got: list[Tensor], want: list[Tensor]) -> float:
    """Largest absolute difference over all parameters, relative to the largest reference entry."""
    scale = max(float(w.abs().max()) for w in want)
    return max(float((g - w).abs().max()) for g, w in zip(got, want)) / scale


class MetricClassifier(pl.LightningModule):
    """An MLP trained with a metricopt loss; one logit per sample."""

    def __init__(self, n_features: int, loss: str = "f1", learning_rate: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Linear(64, 1))
        self.loss = LOSSES[loss]()
        self.check: dict[str, float] = {}
        self._batch: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).squeeze(-1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.global_step == 0:
            self._batch = (x, y)
        loss = self.loss(self(x), y)  # the loss of the global batch, gathered by the loss itself
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_after_backward(self) -> None:
        """First step only: DDP's averaged gradients against one process holding the gathered batch."""
        if self._batch is None:
            return
        x, y = (gather(t.detach()) for t in self._batch)  # every process's share, in rank order
        reference = copy.deepcopy(self.model)  # the weights before this step's update
        reference.zero_grad()
        LOSSES[self.hparams.loss](distributed=False)(reference(x).squeeze(-1), y).backward()
        want = [p.grad for p in reference.parameters()]
        local = copy.deepcopy(self.model)  # the control: the loss of this process's share alone
        local.zero_grad()
        x_own, y_own = self._batch
        LOSSES[self.hparams.loss](distributed=False)(local(x_own).squeeze(-1), y_own).backward()
        grads = [p.grad.detach().clone() for p in local.parameters()]
        if torch.distributed.is_initialized():  # DDP would average the shares' gradients the same way
            for g in grads:
                torch.distributed.all_reduce(g)
                g /= torch.distributed.get_world_size()
        self.check = {"gradient_error": relative_error([p.grad for p in self.model.parameters()], want),
                      "share_only_gradient_error": relative_error(grads, want),
                      "global_batch": len(y)}
        self._batch = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="CPU processes (DDP)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="f1")
    parser.add_argument("--float64", action="store_true", help="train in float64 (the tests' gradient check)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    data = load_dataset("breast_cancer")
    split = train_val_test_split(data.X, data.y, test_size=0.2, val_size=0.2, random_state=0)
    dtype = torch.float64 if args.float64 else torch.float32
    train = TensorDataset(torch.as_tensor(split.X_train, dtype=dtype), torch.as_tensor(split.y_train, dtype=dtype))
    module = MetricClassifier(split.X_train.shape[1], loss=args.loss)
    trainer = pl.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                         max_epochs=args.epochs, precision="64-true" if args.float64 else "32-true",
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    trainer.fit(module, DataLoader(train, batch_size=args.batch_size, shuffle=True))

    if trainer.is_global_zero:
        with torch.no_grad():
            scores = module(torch.as_tensor(split.X_test, dtype=dtype)).numpy()
        results = {"loss": args.loss, "world_size": trainer.world_size, "epochs": args.epochs,
                   "test_f1": float(f1_score(split.y_test, scores > 0)),
                   "test_ap": float(average_precision_score(split.y_test, scores)), **module.check}
        print(json.dumps(results))
        if args.output is not None:
            args.output.write_text(json.dumps(results, indent=2) + "\n")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    if os.environ.get("WORLD_SIZE", "1") != "1":
        # torch 2.13 with gloo aborts about one process in ten at interpreter exit, after all work is done
        # (SIGABRT, "terminate called without an active exception"); leave without that teardown.
        os._exit(0)
