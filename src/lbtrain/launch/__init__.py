"""Starting runs: the run dir and its lock, Hydra's callbacks, one job per DDP rank, the console."""
