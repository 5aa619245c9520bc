"""Callbacks that are not measurements: the last checkpoint, preemption and Ctrl-C, the run's
summary, the LR monitor, a base run's branch points. Measurements live in `lbtrain.measure`."""
