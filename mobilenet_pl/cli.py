"""The small ``key=value`` command lines of profile, export, quantize and benchmark (no Hydra needed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def cli_args(argv: Sequence[str] | None, usage: str) -> list[str] | None:
    """The arguments, or None after printing ``usage`` for ``-h``/``--help``/``help``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in args):
        print(usage)
        return None
    return args


def parse_overrides(args: Sequence[str], defaults: dict[str, str]) -> dict[str, str]:
    """``key=value`` arguments over ``defaults``; unknown keys raise a ValueError listing the known ones."""
    values = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"unknown argument {arg!r}; expected key=value with key in {sorted(defaults)}")
        values[key] = value
    return values


def to_number(key: str, value: str, kind: type[int] | type[float], minimum: float, *, inclusive: bool = True) -> float:
    """Parse ``value`` as ``kind`` and check the bound, naming ``key`` in the error."""
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or (number < minimum if inclusive else number <= minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ValueError(f"{key} must be a {kind.__name__} {bound}, got {value!r}")
    return number


def to_bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}")
