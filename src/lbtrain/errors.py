"""lbtrain's one error type for bad input. Dependency-free, so that leaf modules (`gbn.py`,
the model registry, the data modules) can raise it without importing the config layer."""


class ConfigError(ValueError):
    """A bad configuration value; its message is one line: key, bad value, what is allowed."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (many libraries' span several)."""
    return " ".join(str(e).split()) or type(e).__name__
