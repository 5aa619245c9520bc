"""Measurements logged during training: the `StepSeries` base, then each measurement's math
(free of Lightning, cheap to import) beside the callback that logs it."""
