"""The one place that validates a run's configuration, before anything is built."""


class ConfigError(ValueError):
    """A bad configuration value; its message is one line: key, bad value, what is allowed."""
