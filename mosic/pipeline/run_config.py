"""A training run's settings as one flat mapping, named as ``mosic train``'s flags.

Every leaf field of ``TrainConfig`` and of the configs it nests is a setting, named as its flag
without the dashes: ``lr_head`` is ``TrainConfig.optim.lr_head`` and ``--lr-head``,
``input_size`` is ``TrainConfig.clip.augment.input_size``, the fields of ``evaluation`` take
the prefix ``eval_``. A run file (``mosic train --config run.yaml``), the run folder's
``config.yaml``, ``mosic train --print-config`` and a reproduction row's ``train.settings`` all
use these names. ``SETTINGS`` is derived from the dataclasses, so a new field is a new setting
at once; a flag for it is optional (tests check that every flag of ``mosic train`` is a setting
with the setting's default).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from mosic.pipeline.train_config import TrainConfig

# Nested configs whose settings' names carry a prefix (their fields repeat other names).
GROUP_PREFIX = {"evaluation": "eval_"}
# Fields whose flag was named before this table existed: field path -> setting name.
RENAMED = {
    "stores": "store",
    "loader_workers": "workers",
    "objective.sinkhorn_iterations": "sinkhorn_iters",
    "objective.symmetric": "symmetric_loss",
}


@dataclass(frozen=True)
class Setting:
    """One setting: its name (flag and YAML key), where it lives in ``TrainConfig``, its type
    and its default (plain data; ``MISSING`` when the field has none)."""

    name: str
    path: tuple[str, ...]
    kind: Any
    default: Any


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _walk(cls: type, path: tuple[str, ...] = (), prefix: str = "") -> Iterator[Setting]:
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind, here = hints[f.name], (*path, f.name)
        if is_dataclass(kind):
            yield from _walk(kind, here, prefix + GROUP_PREFIX.get(f.name, ""))
            continue
        if f.default is not MISSING:
            default = _plain(f.default)
        elif f.default_factory is not MISSING:
            default = _plain(f.default_factory())
        else:
            default = MISSING
        yield Setting(RENAMED.get(".".join(here), prefix + f.name), here, kind, default)


def _settings() -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for setting in _walk(TrainConfig):
        if setting.name in found:
            other = ".".join(found[setting.name].path)
            raise TypeError(
                f"TrainConfig fields {other} and {'.'.join(setting.path)} are both the setting "
                f"{setting.name!r}: rename one, or give it a name in run_config.RENAMED"
            )
        found[setting.name] = setting
    return found


SETTINGS: dict[str, Setting] = _settings()
# Settings that do not change what a run computes: a resume may change them without asking.
OPERATIONAL = frozenset(
    {"output", "workers", "log_every", "checkpoint_every", "keep_checkpoints"}
    | {s.name for s in SETTINGS.values() if s.path[0] == "evaluation"}
)


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or ``""``."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def coerce(name: str, value: Any, where: str = "") -> Any:
    """``value`` given for setting ``name`` as plain data of the setting's type (lists for
    tuples); ``where`` prefixes the one-line ValueError (a file name, say)."""
    if name not in SETTINGS:
        raise ValueError(f"{where}unknown setting {name!r}{closest(name, SETTINGS)}")
    return _coerce(SETTINGS[name].kind, value, f"{where}{name}")


def _coerce(kind: Any, value: Any, label: str) -> Any:
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _coerce(inner, value, label)
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"{label}: expected one of {', '.join(map(show, args))}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str) and args[0] is not str:
            value = [v.strip() for v in value.split(",")]
        elif isinstance(value, str | Path):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{label}: expected a list, got {value!r}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise ValueError(f"{label}: expected {len(kinds)} values, got {len(value)}")
        return [_coerce(k, v, label) for k, v in zip(kinds, value, strict=True)]
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and not isinstance(value, bool):
        try:
            if isinstance(value, int | str):
                return int(value)
        except ValueError:
            pass
    if kind is float and not isinstance(value, bool):
        try:
            if isinstance(value, int | float | str):  # YAML reads 1e-4 (no dot) as a string
                return float(value)
        except ValueError:
            pass
    if kind is str and isinstance(value, str | Path):
        return str(value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ValueError(f"{label}: expected {expected.get(kind, kind)}, got {value!r}")


def coerce_all(given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Every entry of ``given`` coerced (``-`` in names read as ``_``)."""
    return {
        str(key).replace("-", "_"): coerce(str(key).replace("-", "_"), value, where)
        for key, value in given.items()
    }


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_mapping(path: Path) -> dict:
    """A YAML file holding one mapping (empty: {}); one-line ValueErrors name the file (also
    for a key given twice)."""
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem else ""
        raise ValueError(f"{path}: not valid YAML{at}{why}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected 'name: value' lines")
    return data


def load_settings(path: Path) -> dict[str, Any]:
    """A run file's settings, coerced; one-line ValueErrors name the file."""
    return coerce_all(read_mapping(path), f"{path}: ")


def build_config(settings: Mapping[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from coerced settings; defaults for those not given."""
    nested: dict = {}
    for setting in SETTINGS.values():
        value = settings.get(setting.name, setting.default)
        if value is MISSING:  # stores: required by the dataclass, checked where they are read
            value = []
        *parents, leaf = setting.path
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return TrainConfig.from_dict(nested)


def settings_of(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as flat settings (plain data), in ``SETTINGS`` order."""
    data = cfg.to_dict()
    flat = {}
    for setting in SETTINGS.values():
        value = data
        for key in setting.path:
            value = value[key]
        flat[setting.name] = value
    return flat


def config_yaml(cfg: TrainConfig, comments: Iterable[str] = ()) -> str:
    """``cfg`` as a run file (what ``--config`` reads), with ``# `` comment lines on top."""
    head = "".join(f"# {line}\n" for line in comments)
    return head + yaml.safe_dump(settings_of(cfg), sort_keys=False, default_flow_style=None)


def differences(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Settings whose values differ: name -> (old, new)."""
    before, after = settings_of(old), settings_of(new)
    return {k: (before[k], after[k]) for k in after if before[k] != after[k]}


def show(value: Any) -> str:
    """A setting's value as it reads in YAML: null, true, [0.4, 1.0], 0.0001."""
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def show_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``lr_head 0.0001 -> 0.01, seed 0 -> 1``."""
    return ", ".join(f"{k} {show(a)} -> {show(b)}" for k, (a, b) in changes.items())
