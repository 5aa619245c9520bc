"""A run's configuration: the command line's pre-checks, the checks of its values (both before
Hydra writes anything), the registries that names in it are found in, and its resolvers."""
