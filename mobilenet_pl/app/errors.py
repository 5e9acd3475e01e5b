"""The one error boundary every entry point runs its work in.

Bad input and expected failures (a wrong value, a missing file, an optional extra not installed, a
failed check) print one ``error: ...`` line naming the key or file and exit with status 2. Anything else
is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of expected failures too.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import re
import sys
from collections.abc import Iterator
from types import ModuleType

from mobilenet_pl._checks import first_line

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
# the optional extras of pyproject.toml, by the module that needs them
EXTRA_OF_MODULE = {
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "executorch": "mobile",
    "torchao": "mobile",
    "hydra_plugins.hydra_optuna_sweeper": "sweeps",
    "hydra_plugins.hydra_submitit_launcher": "sweeps",
}


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key, the value and what is allowed."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""


class CheckFailedError(RuntimeError):
    """A tool's own check failed (e.g. an export's outputs differ from eager PyTorch)."""


class RankLostError(RuntimeError):
    """Another DDP rank died or stopped answering; the message names it where known, and how to resume."""


# what a gloo/NCCL collective raises when its peer is gone (kill -9, a lost node) or hangs past the timeout
_COLLECTIVE_FAILURE = re.compile(
    r"gloo/transport|Connection (closed|reset) by peer|Broken pipe|Timed out waiting|timeout caused pair closure"
    r"|NCCL communicator was aborted"
)


def is_collective_failure(err: BaseException) -> bool:
    """True for torch.distributed's errors and the RuntimeErrors gloo raises when a peer is lost."""
    dist = sys.modules.get("torch.distributed")  # no torch import here: a process without torch has no DDP
    dist_error = getattr(dist, "DistError", None) if dist is not None else None
    if dist_error is not None and isinstance(err, dist_error):
        return True
    return isinstance(err, RuntimeError) and bool(_COLLECTIVE_FAILURE.search(str(err)))


def install_hint(module: str) -> str:
    extra = EXTRA_OF_MODULE.get(module, EXTRA_OF_MODULE.get(module.split(".")[0]))
    return f"pip install 'mobilenet-pl[{extra}]'" if extra else f"pip install {module.split('.')[0]}"


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module``, or raise `MissingExtraError` naming the install command.

    Example:
        >>> require("math", "tests").__name__
        'math'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{needed_for} needs {module.split('.')[0]}: {install_hint(module)}") from err


# OSErrors about where the user asked us to read or write (a read-only mount, a full disk, no permission): the
# message names the path; anything else stays a bug with its traceback
_USER_OS_ERRORS = {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENAMETOOLONG,
}


# the Lightning layer's expected failures, by module: looked up only where that module was imported (an error
# from a module that never ran cannot be of its class), so a config typo never pays for importing Lightning
_LIT_ERRORS = (
    ("mobilenet_pl.lit.callbacks", "NonFiniteLossError"),
    ("mobilenet_pl.lit.checkpoint_io", "CheckpointWriteError"),
)


def _loaded_classes(names: tuple[tuple[str, str], ...]) -> tuple[type, ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in names)
    return tuple(cls for cls in found if isinstance(cls, type))


def _expected(err: BaseException) -> BaseException | None:
    """The exception to report in one line, or None when ``err`` is a bug (keep the traceback)."""
    from hydra.errors import HydraException, InstantiationException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, InstantiationException):  # a component refused its arguments: report the cause
        cause = err.__cause__
        return cause if isinstance(cause, (ValueError, FileNotFoundError, RuntimeError)) else None
    expected = (
        ValueError,  # ConfigError and the weights reader's WeightsFileError ("KEY='PATH' is not allowed: why")
        FileNotFoundError,
        MissingExtraError,
        CheckFailedError,
        RankLostError,
        *_loaded_classes(_LIT_ERRORS),
        MissingConfigException,
        HydraException,  # override parse and composition errors
        OmegaConfBaseException,  # wrong type for a typed key, unknown key
    )
    if isinstance(err, OSError) and err.errno in _USER_OS_ERRORS:  # e.g. export to a read-only mount
        return err
    return err if isinstance(err, expected) else None


def one_line(err: BaseException) -> str:
    """The first line of a message, with what Hydra/OmegaConf put on later lines that the user needs."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    first = first_line(err)
    if isinstance(err, MissingConfigException) and err.options:
        first = f"{first}; available: {', '.join(sorted(err.options))}"
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():  # "Error merging override x=y": why
        first = f"{first.rstrip('.')}: {first_line(cause)}"
    return first


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Expected failures become one ``error:`` line on stderr and exit status 2; Ctrl-C outside a training or
    test stage (where it saves last.ckpt as SIGTERM does) one ``interrupted`` line and status 130."""
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("interrupted (Ctrl-C): stopped; files written before it are kept", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as err:
        reported = _expected(err)
        if reported is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(reported)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
