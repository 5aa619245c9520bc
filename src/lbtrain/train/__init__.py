"""One run: the batch plan, Ghost BN, optimizers and schedules, the LightningModule, the loggers,
and the build-check-fit-record sequence (`fit.train`)."""
