"""Backbone weights from local files: reading them safely and explaining, in one line, why a
file does not fit a backbone."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the backbone; str() is one line naming the
    file and the reason."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``torch.save`` file (never unpickled: a
    ``torch.save`` file is read with ``weights_only=True``). A checkpoint that nests its weights
    under ``model``, ``state_dict`` or ``teacher`` (DINO's) is unwrapped.

    Raises FileNotFoundError for a missing file and WeightsError for a file that is not weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # safetensors raises its own error type for damaged files
            raise WeightsError(
                f"{path}: not a readable safetensors file ({_reason(exc)})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and _is_torch_file(path):
            raise WeightsError(
                f"{path}: holds Python objects besides tensors, which mosic does not unpickle; "
                "save the model's state dict alone (torch.save(model.state_dict(), path)) or "
                "as .safetensors"
            ) from None
        raise WeightsError(_not_weights(path)) from None
    except Exception:  # torch raises several types (KeyError, RuntimeError, ...) for non-weights
        raise WeightsError(_not_weights(path)) from None
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: not a state dict (holds a {type(state).__name__})")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        kinds = sorted({type(v).__name__ for v in state.values() if not torch.is_tensor(v)})
        raise WeightsError(f"{path}: not a state dict of tensors (also holds {', '.join(kinds)})")
    return state


def _not_weights(path: Path) -> str:
    return f"{path}: not a weights file (neither .safetensors nor a torch.save file of tensors)"


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file (a zip archive or a legacy pickle)."""
    with path.open("rb") as handle:
        head = handle.read(2)
    return head in (b"PK", b"\x80\x02")


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every entry's shape."""
    return {k: tuple(v.shape) for k, v in state.items()}


def mismatch_line(
    found: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    shown: int = 3,
) -> str | None:
    """How ``found`` (key -> shape) differs from ``expected``: the first ``shown`` keys of each
    kind of difference, or None when they agree."""
    differ = [k for k in expected if k in found and found[k] != expected[k]]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = [f"{k} {found[k]} where the backbone has {expected[k]}" for k in differ[:shown]]
    if len(differ) > shown:
        parts.append(f"{len(differ) - shown} more of another shape")
    for keys, what in ((missing, "missing"), (extra, "unexpected")):
        if keys:
            more = ", ..." if len(keys) > shown else ""
            parts.append(f"{len(keys)} {what} ({', '.join(keys[:shown])}{more})")
    return "; ".join(parts) or None


def closest_backbone(
    found: Mapping[str, tuple[int, ...]],
    candidates: Mapping[str, Callable[[], Mapping[str, tuple[int, ...]]]],
) -> str | None:
    """The first candidate whose keys and shapes equal ``found``'s, position embeddings aside
    (their grid may be any): ``candidates`` maps a name to a function giving its shapes."""
    wanted = {k: v for k, v in found.items() if k != "pos_embed"}
    for name, make in candidates.items():
        theirs = {k: v for k, v in make().items() if k != "pos_embed"}
        if theirs == wanted:
            return name
    return None
