"""YAML configuration -> frozen, validated objects, built once per (re)load (docs/configuration.md)."""

from config.loader import ConfigError, default_config_path, load_config, load_config_text
from config.model import Config

__all__ = ["Config", "ConfigError", "default_config_path", "load_config", "load_config_text"]
