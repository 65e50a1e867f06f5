"""Reading YAML files and ``KEY VALUE`` overrides into a config, with errors that help.

maskrcnn-benchmark's YAML files load unchanged: integers are accepted where a float
is expected, strings such as ``"(800,)"`` are evaluated as Python literals (as yacs
does), and a scalar where a tuple is expected becomes a 1-tuple. A key that does not
exist fails with the file it came from and the nearest known keys; a key of a
maskrcnn-benchmark feature that detbench does not have says so.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml
from yacs.config import CfgNode

from .defaults import get_cfg
from .node import remember_config_name, settle

BASE_KEY = "_BASE_"
# Prefix of the recipes shipped inside the package: detbench://configs/quickstart/....yaml
SCHEME = "detbench://"

# maskrcnn-benchmark features that detbench does not implement: key prefix -> feature.
UNSUPPORTED = {
    "MODEL.FBNET": "FBNet backbones",
    "PATHS_CATALOG": "maskrcnn-benchmark's paths_catalog.py (use DATASETS names and the detbench catalog)",
}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the source."""


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys += _all_keys(value, full + ".") if isinstance(value, CfgNode) else [full]
    return keys


def _unknown_key_message(full_key: str, root: CfgNode, source: str) -> str:
    for prefix, feature in UNSUPPORTED.items():
        if full_key == prefix or full_key.startswith(prefix + "."):
            return f"{source}: {full_key} belongs to {feature}, which detbench does not implement"
    known = _all_keys(root)
    leaf = full_key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.6)
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close]
    hint = f" Did you mean {', '.join(close[:4])}?" if close else ""
    return f"{source}: unknown config key {full_key}.{hint}"


def _decode(value: Any) -> Any:
    """Strings that are Python literals become values (yacs' rule); others stay strings."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _coerce(value: Any, default: Any, full_key: str, source: str) -> Any:
    """``value`` converted to the type of ``default``, or a ConfigError."""
    if not isinstance(default, str):
        value = _decode(value)
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (tuple, list):
        if isinstance(value, (tuple, list)):
            return kind(value)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return kind([value])
    raise ConfigError(
        f"{source}: {full_key} must be of type {kind.__name__} (default {default!r}), "
        f"got {value!r} of type {type(value).__name__}"
    )


def _merge(node: CfgNode, updates: dict, root: CfgNode, source: str, prefix: str = "") -> None:
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in node:
            raise ConfigError(_unknown_key_message(full, root, source))
        if isinstance(node[key], CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} is a section; give it keys, not {value!r}")
            _merge(node[key], value, root, source, full + ".")
        else:
            node[key] = _coerce(value, node[key], full, source)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _base_path(base: Any, child: Path) -> Path:
    """Where a ``_BASE_`` entry of ``child`` points: a path relative to ``child``'s folder, an
    absolute path, or a shipped recipe ``detbench://configs/<name>`` (see detbench.model_zoo)."""
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{child}: _BASE_ must be a file name, got {base!r}")
    if base.startswith(SCHEME):
        return resolve_config_path(base)
    return child.parent / base


def _chain_text(chain: list[Path]) -> str:
    return " -> ".join(str(p) for p in chain)


def read_config_chain(config_file: str | Path) -> list[tuple[Path, dict]]:
    """The YAML mappings of ``config_file`` and its ``_BASE_`` files, the deepest base first.

    A ``_BASE_`` file may have its own ``_BASE_``, to any depth. A cycle, or a base that
    cannot be read, raises ConfigError naming the whole chain (``child -> base -> ...``).
    """
    path = resolve_config_path(config_file)
    chain: list[Path] = []
    found: list[tuple[Path, dict]] = []
    while True:
        resolved = path.resolve()
        if resolved in chain:
            raise ConfigError(f"_BASE_ cycle: {_chain_text(chain + [resolved])}")
        try:
            data = _read_yaml(path)
        except ConfigError as exc:
            if not chain:
                raise
            raise ConfigError(f"{exc} (a _BASE_ reached through {_chain_text(chain + [resolved])})") from exc
        chain.append(resolved)
        base = data.pop(BASE_KEY, None)
        found.append((path, data))
        if base is None:
            return found[::-1]
        path = _base_path(base, path)


def resolve_config_path(config_file: str | Path) -> Path:
    """``config_file`` as a path; ``detbench://configs/<name>`` names a shipped recipe."""
    name = str(config_file)
    if name.startswith(SCHEME):
        from detbench.model_zoo import get_config_file

        try:
            return Path(get_config_file(name))
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from exc
    return Path(config_file)


def merge_from_file(cfg: CfgNode, config_file: str | Path) -> None:
    """Merge a YAML file into ``cfg``, after its chain of ``_BASE_`` files (deepest first)."""
    if cfg.is_frozen():
        raise ConfigError(f"cannot merge {config_file} into a frozen config (call defrost() first)")
    chain = read_config_chain(config_file)
    for path, data in chain:
        _merge(cfg, data, cfg, str(path))
    remember_config_name(cfg, chain[-1][0])


def merge_from_list(cfg: CfgNode, opts: Iterable[str]) -> None:
    """Merge command-line overrides ``["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.01"]``."""
    if cfg.is_frozen():
        raise ConfigError("cannot merge overrides into a frozen config (call defrost() first)")
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; got an odd number: {opts}")
    for full_key, value in zip(opts[0::2], opts[1::2]):
        *parents, leaf = full_key.split(".")
        nested: dict = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        _merge(cfg, nested, cfg, "command line")


def load_config(config_file: str | Path | None = None, opts: Iterable[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then ``config_file`` (after its ``_BASE_`` chain), then ``opts``; validated, with
    ``MODEL.DEVICE auto`` and ``OUTPUT_DIR``'s ``{config}`` settled (see node.settle), and frozen
    unless asked not to."""
    cfg = get_cfg()
    if config_file:
        merge_from_file(cfg, config_file)
    merge_from_list(cfg, opts)
    from .validate import validate_config  # here: validate.py imports ConfigError from this module

    validate_config(cfg)
    settle(cfg)
    if freeze:
        cfg.freeze()
    return cfg
