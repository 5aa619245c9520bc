"""Lightning's LearningRateMonitor on lbtrain's step convention: the LR of update t is
logged at step t (Lightning logs it at t - 1, before the update). With no logger
(`logger=none`) it logs nothing, where Lightning's would stop the run."""

from lightning.pytorch.callbacks import LearningRateMonitor as _LightningMonitor

from lbtrain.lightning_internals import logs_this_step, monitored_lrs
from lbtrain.train.steps import is_new_update, step_of_this_batch


class LearningRateMonitor(_LightningMonitor):
    def on_train_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not trainer.loggers or self.logging_interval == "epoch" or not logs_this_step(trainer):
            return
        if not is_new_update(trainer, batch_idx):
            return  # a later micro-batch of the same update: logged once per update
        stats = monitored_lrs(self, trainer, "step" if self.logging_interval is None else "any")
        step = step_of_this_batch(trainer)  # the LR of the update to come
        for logger in trainer.loggers if stats else ():
            logger.log_metrics(stats, step=step)
