"""The LightningModule: cross-entropy classification, SGD + momentum, a per-step schedule.

It wires the paper's pieces (the model, already Ghost-BN-converted; the `BatchPlan` with
the scaled LR and stretched regime); it does not re-implement them.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lbtrain.scaling import BatchPlan, make_scheduler


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        plan: BatchPlan,
        num_classes: int,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.save_hyperparameters(ignore=["model", "plan"])
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()  # weighted by batch size, exact under uneven DDP shards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits, y)
        # Logged tensors are only read on the host every `log_every_n_steps`: no sync here.
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y), weight=len(y))
        self.val_acc.update(logits, y)
        self.log("val/loss", self.val_loss, on_epoch=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.plan.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            nesterov=hp.nesterov,
        )
        # optimizer steps per epoch, after limit_train_batches and gradient accumulation
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // self.trainer.max_epochs)
        scheduler = make_scheduler(optimizer, self.plan, steps_per_epoch, hp.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
