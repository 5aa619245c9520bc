"""A run's configuration: the command line's pre-checks, the checks of its values (both before
Hydra writes anything), the registries that names in it are found in, and its resolvers."""


def __getattr__(name: str):
    """0.1's `lbtrain.config.<name>` (one module then), for one release (lbtrain/moved.py)."""
    from lbtrain.moved import old_config_name

    return old_config_name(name)
