"""The command line, before Hydra starts: unknown group options and misspelt keys refused in one
line, and every point of a sweep composed and validated as its job will (`check_overrides`);
your config dirs and extension modules; and `compose_config`, a run's config outside the
command line (tests, benchmarks, notebooks)."""

from importlib.resources import files
from itertools import product
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lbtrain.config.validate import GROUPS, validate
from lbtrain.errors import ConfigError


def group_options(group: str, config_dirs: list[str] = ()) -> list[str]:
    """The options of a config group: lbtrain's own, and those in your config dirs
    (`hydra.searchpath=[file://my_conf]`, see the README's "Extend lbtrain")."""
    folders = [files("lbtrain.conf") / group, *(Path(d) / group for d in config_dirs)]
    names = [p.name for folder in folders if folder.is_dir() for p in folder.iterdir()]
    return sorted({name.removesuffix(".yaml") for name in names if name.endswith(".yaml")})


def config_dirs(overrides: list[str]) -> list[str]:
    """Your config dirs, from the command line's `hydra.searchpath=[file://...]`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return _config_dirs(OverridesParser.create().parse_overrides(overrides))


def _config_dirs(parsed) -> list[str]:
    """The file:// entries of a `hydra.searchpath=[...]` override."""
    for override in parsed:
        if override.key_or_group == "hydra.searchpath" and not override.is_sweep_override():
            value = override.value()
            entries = value if isinstance(value, list) else [value]
            return [e.removeprefix("file://") for e in entries if e.startswith("file://")]
    return []


def import_extensions(modules: list[str]) -> None:
    """Import the config's `imports`: your modules, whose models and data modules register
    themselves (`@register_model`, `@register_datamodule`), before the config is checked."""
    import importlib

    for name in modules or []:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"imports=[{', '.join(modules)}]: no module named {e.name!r} (put it in the "
                "working directory or on PYTHONPATH)"
            ) from None


def check_overrides(overrides: list[str]) -> DictConfig | None:
    """Before Hydra starts, whose own messages span several lines: reject unknown group
    options (`model=nope`, also inside sweeps: `model=cnn1d,nope`), then compose and
    validate every point of a sweep as its job will, so that a misspelt key (`batchsize=5`)
    or one bad value (`-m batch_size=32,0`) refuses the whole sweep before any job runs or
    is submitted. Returns the first point's config (None for a command line only Hydra can
    parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # malformed: Hydra reports it in its own words
        return None
    config_dirs = _config_dirs(parsed)
    axes = []  # each override's values on the command line: the sweep is their product
    for override in parsed:
        if override.key_or_group == "hydra.searchpath":
            axes.append([override.input_line])  # your config dirs: compose as Hydra will
        # values None: no points to check (a sweeper's own syntax)
        if override.key_or_group.startswith("hydra") or (values := _values(override)) is None:
            continue
        group = override.key_or_group
        if group in GROUPS and not override.is_delete() and not override.package:
            options = group_options(group, config_dirs)
            for value in values:
                if value not in options and value != "null":
                    raise ConfigError(
                        f"{group}={value}: no such {group} config; choose one of: "
                        + ", ".join(options)
                    )
        if override.is_sweep_override():
            axes.append([f"{override.get_key_element()}={v}" for v in values])
        else:
            axes.append([override.input_line])
    points = [list(point) for point in product(*axes)]
    first = _compose(points[0])
    swept = [i for i, values in enumerate(axes) if len(values) > 1]
    for point in points:
        try:
            check_point(point)
        except ConfigError as e:
            if not swept:
                raise
            where = " ".join(point[i] for i in swept)
            raise ConfigError(f"{e} (in the sweep's point {where})") from None
    return first


def check_point(point: list[str]) -> None:
    """One point composed and validated as its job will (what needs the job's own Hydra, as
    `${hydra:...}`, is left to the job's check)."""
    try:
        cfg = compose_config(point, "<run dir>")
    except OmegaConfBaseException:
        return
    import_extensions(cfg.get("imports"))
    validate(cfg)


def _values(override) -> list[str] | None:
    """An override's values: one, a sweep's list, or an interval's two bounds (Optuna: the
    values in between are drawn as the sweep runs); None where none can be known."""
    from hydra.core.override_parser.types import IntervalSweep

    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        value = override.value()
        return [str(value.start), str(value.end)] if isinstance(value, IntervalSweep) else None


def _compose(point: list[str], hydra_config: bool = False) -> DictConfig:
    """One point's config as Hydra composes it; a key that is not there in one line."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException

    try:
        with initialize_config_module("lbtrain.conf", version_base="1.3"):
            return compose("train", overrides=point, return_hydra_config=hydra_config)
    except ConfigCompositionException as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if lines[0].startswith("Could not override '"):
            key = lines[0].split("'")[1]
            given = next((o for o in point if o.split("=", 1)[0] == key), key)
            raise ConfigError(
                f"{given}: no such key in the config (check the spelling; a new key needs a "
                f"leading +, as in +{given})"
            ) from None
        raise ConfigError(" ".join(lines)) from None


def compose_config(overrides: list[str], run_dir: str) -> DictConfig:
    """A run's resolved config outside `python -m lbtrain.run` (tests, benchmarks,
    notebooks): Hydra composes it exactly as the command line would, with `run_dir` as the
    job's output dir."""
    from hydra.core.hydra_config import HydraConfig

    cfg = _compose(overrides, hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.runtime.cwd = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg
