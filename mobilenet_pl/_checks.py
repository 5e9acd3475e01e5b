"""Two small helpers every floor uses: "is this a finite real number" and "the first line of an error".

They stand below every floor (like `_version`) and import nothing but the standard library, so the app,
the Lightning layer and the models agree on both, and the commands' error lines cost no import of torch.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DETAIL = 200  # a quoted library message is cut here: the line names the file, not torch's essay


def is_finite_number(value: Any) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``, NaN or infinite.

    Example:
        >>> tuple(is_finite_number(v) for v in (1, 0.5, True, float("nan"), "1"))
        (True, True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def first_line(err: BaseException | str, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its class name when it has none), cut to ``limit``.

    Example:
        >>> first_line(ValueError("bad value\\nmore detail")), first_line(KeyError())
        ('bad value', 'KeyError')
    """
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else (err.__class__.__name__ if isinstance(err, BaseException) else "")
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
