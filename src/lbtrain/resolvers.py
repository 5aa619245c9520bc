"""OmegaConf resolvers the configs use; registered when `lbtrain.run` is imported."""

import netrc
import os
import secrets
import sys
from urllib.parse import urlparse

from omegaconf import OmegaConf


def run_id() -> str:
    """A random suffix so two runs started in the same second never share a directory."""
    return secrets.token_hex(3)


def wandb_mode() -> str:
    """`WANDB_MODE` if set; else online when an API key is configured; else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return "online" if netrc.netrc().authenticators(host) else "offline"
    except (FileNotFoundError, netrc.NetrcParseError):
        return "offline"


def register() -> None:
    # use_cache: every reference to ${lbtrain.run_id:} in one config sees the same value
    OmegaConf.register_new_resolver("lbtrain.run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("lbtrain.wandb_mode", wandb_mode, replace=True)
    OmegaConf.register_new_resolver("lbtrain.isatty", sys.stdout.isatty, replace=True)
