"""What a config names, found by name (timm-style): models (`model.name`), data modules
(`data.name`) and optimizers (`optim.optimizer`). Each registers itself with its registry's
decorator; yours do the same from the modules named in the config's `imports`. A name that
no module registered is refused in one line that lists the names there are."""

from lbtrain.errors import ConfigError


class Registry:
    def __init__(self, key: str) -> None:
        self.key = key  # the config key that names an entry, for the one-line refusal
        self._entries: dict[str, object] = {}
        self.facts: dict[str, dict] = {}  # what an entry declares beside itself

    def register(self, name=None, **facts):
        """`@registry.register` (under the function's own name) or
        `@registry.register("name", fact=value, ...)`."""
        if callable(name):  # used bare
            return self.register(None, **facts)(name)

        def add(entry):
            key = name or entry.__name__
            if key in self._entries:
                raise ValueError(f"{self.key}={key} is registered twice")
            self._entries[key], self.facts[key] = entry, facts
            return entry

        return add

    def __getitem__(self, name: str):
        if name not in self._entries:
            raise ConfigError(f"{self.key}={name}: use one of {', '.join(self)}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)  # in the order registered
