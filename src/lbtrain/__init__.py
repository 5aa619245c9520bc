"""lbtrain: reproduce and extend "Train longer, generalize better" (Hoffer et al., 2017)."""

__version__ = "0.1.0"
