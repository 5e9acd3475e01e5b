"""How every entry point starts: Hydra parses ``key=value`` into the tool's typed config, the work runs
inside the shared error boundary, and ``--help`` prints the tool's own page (conf/hydra/help/<tool>.yaml).

Hydra reports its own errors (an unknown key, a value of the wrong type, a missing config option) in
several lines and exits 1, before the task runs. So a plain run composes the config once with Hydra's
compose API inside the error boundary first: the same errors then read as one ``error:`` line, exit 2.
Runs with Hydra flags (``--help``, ``--cfg``, ``-m`` sweeps, ...) go to Hydra as they are.

A run that is refused writes nothing: Hydra would save the run's record (``.hydra/config.yaml``,
``hydra.yaml``, ``overrides.yaml``) into the run dir before the job starts, so a refused run in a finished
run's dir (auto_resume of another model, a run dir in use, a bad value) would rewrite that run's record.
Hydra is told ``hydra.output_subdir=null`` and the job saves the record itself once the tool's checks pass
(`save_run_record`), or when the task returns.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mobilenet_pl.app.config import (
    check_known_keys,
    check_required,
    check_run_dir,
    config_dir,
    register_schemas,
    unknown_name,
)
from mobilenet_pl.app.errors import EXIT_BAD_INPUT, ConfigError, error_boundary, one_line, require
from mobilenet_pl.app.results import read_sweep_id

# overrides that need a plugin from the ``sweeps`` extra
PLUGIN_OF_OVERRIDE = {
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
}


def _check_plugins(args: Sequence[str]) -> None:
    for arg in args:
        plugin = PLUGIN_OF_OVERRIDE.get(arg.lstrip("+~"))
        if plugin:
            require(plugin, arg)


def _compose(name: str, args: Sequence[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(name, overrides=list(args), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _override_key(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+~").partition("@")[0]


def _in_users_words(name: str, args: Sequence[str], err: Exception) -> ConfigError | None:
    """Hydra's error for a misspelt key or group option as one line in the user's terms, with the nearest
    names (``unknown key 'widht'; did you mean 'width'?``); None for any other error."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    found = re.search(r"Could not find '(.+)/([^/']+)'", str(err))
    if isinstance(err, MissingConfigException) and err.options and found:  # model=v3
        group, option = found.groups()
        return ConfigError(unknown_name("option", option, err.options, prefix=f"{group}="))
    found = re.match(r"Could not override '([^']+)'", str(err))
    if not (isinstance(err, ConfigCompositionException) and found):
        return None
    if not isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)):
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [arg for arg in args if _override_key(arg) != key]
    node: Any = None
    for others in (rest, []):  # the user's other overrides may hold a second mistake: then the defaults
        try:
            node = OmegaConf.select(_compose(name, others), parent) if parent else _compose(name, others)
            break
        except Exception:  # only for the suggestion; the first error is the one reported
            continue
    known = [str(k) for k in node] if isinstance(node, DictConfig) else []
    message = unknown_name("key", leaf, known, prefix=f"{parent}." if parent else "")
    if isinstance(node, DictConfig) and "_target_" in node:  # a class's arguments: the YAML sets only some
        value = next((arg.partition("=")[2] for arg in args if _override_key(arg) == key), "VALUE")
        owner = str(node._target_).rsplit(".", 1)[-1]
        message += f" (an argument of {owner} that the config does not set is added with +{key}={value})"
    return ConfigError(message)


def _check_sweep_keys(name: str, args: Sequence[str]) -> None:
    """A sweep's misspelt key or option, in the user's words before Hydra starts: the config is composed with
    each swept key at its first value. Anything else (a sweeper's own syntax) is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = list(args)
    try:
        overrides = OverridesParser.create().parse_overrides(list(args))
        first = [
            f"{arg.split('=', 1)[0]}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else arg
            for o, arg in zip(overrides, args, strict=True)
        ]
        cfg = _compose(name, first)
    except Exception as err:
        friendly = _in_users_words(name, first, err)
        if friendly is not None:
            raise friendly from None
        return
    check_known_keys(name, cfg)  # +modle=v1


def _quoting_hint(err: BaseException, args: Sequence[str]) -> str | None:
    """How to quote a value holding ``,`` or ``=`` (a path such as ``data.root=/data/a,b``), which Hydra reads as
    a sweep or cannot parse; None when no such value caused ``err``."""
    from hydra.errors import OverrideParseException

    if not (isinstance(err, OverrideParseException) or "Ambiguous value" in str(err)):
        return None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value and value[0] not in "'\"[{(" and ("," in value or "=" in value):
            return (
                f"a value holding ',' or '=' must be quoted for Hydra: '{key}=\"{value}\"' (the single quotes "
                "keep the double ones from the shell)" + ("; to sweep over values add -m" if "," in value else "")
            )
    return None


def _check_composes(name: str, args: Sequence[str]) -> None:
    """Compose ``name`` with ``args`` as Hydra will, so bad overrides fail here, in the boundary."""
    try:
        cfg = _compose(name, args)
    except Exception as err:
        friendly = _in_users_words(name, args, err)
        if friendly is None:
            hint = _quoting_hint(err, args)
            if hint is None:
                raise
            friendly = ConfigError(f"{one_line(err)}; {hint}")
        raise friendly from None
    check_run_dir(str(cfg.hydra.run.dir))  # Hydra would make it before the job, with a traceback
    check_known_keys(name, cfg)
    check_required(name, cfg)
    # a run dir Hydra is about to make (a timestamped default, or a path not there yet) is removed again
    # if the run is refused and nothing but its lock was written into it
    unresolved = str(OmegaConf.to_container(cfg.hydra.run, resolve=False).get("dir", ""))  # type: ignore[union-attr]
    run_dir = Path(str(cfg.hydra.run.dir)).expanduser().absolute()
    _new_run_dir[:] = ["${now:" in unresolved or not run_dir.exists()]
    _existing_ancestors.clear()  # the folders above it that are the user's (Hydra makes the others)
    _existing_ancestors.update(parent for parent in run_dir.parents if parent.exists())


# whether the plain run's dir did not exist before this run (set by `_check_composes`)
_new_run_dir: list[bool] = []
_existing_ancestors: set[Path] = set()
LOCK_FILE = ".lock"  # app/run_dir.py's


def _remove_if_untouched(run_dir: Path) -> None:
    """Remove the dir a refused run made, when it holds nothing but that run's lock file: a refused run
    writes nothing."""
    try:
        if {entry.name for entry in run_dir.iterdir()} <= {LOCK_FILE}:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            run_dir.rmdir()
            # and the empty folders Hydra made above it (a timestamped default's outputs/DATE)
            for parent in run_dir.absolute().parents:
                if parent in _existing_ancestors or any(parent.iterdir()):
                    break
                parent.rmdir()
    except OSError:  # another run took it meanwhile, or it cannot be read: leave it
        pass


OUTPUT_SUBDIR = "hydra.output_subdir"
# the record the running job saves once its checks pass: (its config as composed, the subdir to save it in)
_pending_record: list[tuple[DictConfig, str]] = []


def _split_output_subdir(name: str, args: Sequence[str]) -> tuple[list[str], str | None]:
    """``args`` with ``hydra.output_subdir`` set to null for Hydra, and the subdir the record belongs in (the
    user's last ``hydra.output_subdir=``, else the tool's YAML's, else Hydra's ``.hydra``; None: no record)."""
    subdir: str | None = ".hydra"
    tool_yaml = OmegaConf.load(Path(config_dir()) / f"{name}.yaml")
    tool_hydra = (tool_yaml.get("hydra") if isinstance(tool_yaml, DictConfig) else None) or {}
    if "output_subdir" in tool_hydra:
        subdir = tool_hydra["output_subdir"]
    kept = []
    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == OUTPUT_SUBDIR:
            subdir = None if (arg.startswith("~") or value.strip() in ("null", "")) else value.strip()
            continue
        kept.append(arg)
    # beside the user's last override: argparse takes one run of overrides, so one after `--cfg job` is refused
    at = next((i + 1 for i in reversed(range(len(kept))) if "=" in kept[i] and not kept[i].startswith("-")), len(kept))
    return [*kept[:at], f"{OUTPUT_SUBDIR}=null", *kept[at:]], subdir


def save_run_record() -> None:
    """Save the running job's Hydra record (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) into its
    run dir, as Hydra would have before the job. A tool calls this once its checks pass, so a refused run
    leaves an earlier run's record as it was; the runner calls it when the task returns. Saved once per job."""
    if not _pending_record:
        return
    cfg, subdir = _pending_record.pop()
    hydra_cfg = cast(DictConfig, copy.deepcopy(HydraConfig.get()))
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.output_subdir = subdir
        hydra_cfg.overrides.hydra = [o for o in hydra_cfg.overrides.hydra if o != f"{OUTPUT_SUBDIR}=null"]
    out = Path(hydra_cfg.runtime.output_dir) / subdir
    out.mkdir(parents=True, exist_ok=True)
    records = {
        "config.yaml": cfg,
        "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
        "overrides.yaml": hydra_cfg.overrides.task,
    }
    for file, node in records.items():
        (out / file).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


# Third-party lines a user of these commands cannot act on, dropped while a command runs (and only then):
# (logger name, start of the message) and (warning category, message regex)
QUIET_LOG_LINES = (
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),  # an ad for litlogger
    ("lightning.fabric.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),  # onnxruntime/torchao on a CPU-only machine
)
QUIET_WARNINGS = ((FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),)  # inside Lightning 2.6


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Drop `QUIET_LOG_LINES` and `QUIET_WARNINGS` for the duration of a command, nothing else."""
    filters: dict[str, _DropLines] = {}
    for name, start in QUIET_LOG_LINES:
        filters.setdefault(name, _DropLines(())).starts += (start,)
    for name, drop in filters.items():
        logging.getLogger(name).addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category, message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for name, drop in filters.items():
            logging.getLogger(name).removeFilter(drop)


def lightning_logs_once() -> None:
    """Call after importing Lightning. The commands import it after Hydra set up logging, so its messages reach
    Hydra's handler (the job's stdout) and also the stderr handler ``lightning/__init__.py`` adds to the
    ``lightning`` logger: every line twice. Where the root logger has a handler, that one prints them."""
    if logging.getLogger().handlers:
        lightning = logging.getLogger("lightning")
        for handler in list(lightning.handlers):
            lightning.removeHandler(handler)


def run_tool(name: str, task: Callable[[DictConfig], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``task`` on the composed ``conf/<name>.yaml`` and ``argv`` (default: the command line).

    Returns the exit status: 0, or 2 after one ``error:`` line (with ``argv=None``, a non-zero status
    exits the process). Hydra's own commands (``--help``, ``--cfg job``, ``-m``) work as with any Hydra app.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    register_schemas()
    args, record_subdir = _split_output_subdir(name, args)
    _new_run_dir.clear()

    def checked_task(cfg: DictConfig, multirun: bool) -> Any:
        _pending_record.clear()
        if record_subdir is not None:
            _pending_record.append((copy.deepcopy(cfg), record_subdir))
        try:
            check_known_keys(name, cfg)  # Hydra flags skip `_check_composes`
            if not multirun:
                check_required(name, cfg)
            result = task(cfg)
            save_run_record()  # a task that did not save it after its checks: the run went through
            return result
        except BaseException:
            refused = bool(_pending_record)  # its checks did not pass: the record was never saved
            if refused and _new_run_dir == [True] and not multirun:
                _remove_if_untouched(Path(HydraConfig.get().runtime.output_dir))
            raise
        finally:
            _pending_record.clear()

    def job(cfg: DictConfig) -> Any:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            with error_boundary(), quiet_third_party():
                return checked_task(cfg, multirun=False)
        try:  # a failed job of a sweep is recorded and the sweep goes on
            with error_boundary(), quiet_third_party():
                return checked_task(cfg, multirun=True)
        except (Exception, SystemExit) as err:
            if isinstance(err, SystemExit) and err.code != EXIT_BAD_INPUT:  # e.g. SIGTERM's 143: stop the sweep
                raise
            hydra_cfg = HydraConfig.get()
            record_failure(Path(hydra_cfg.runtime.output_dir), err, read_sweep_id(Path(hydra_cfg.sweep.dir)))
            return None

    job.__module__ = f"mobilenet_pl.{name}"  # Hydra names the job (and its log file) after the module
    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=name)(job)
    saved, status = sys.argv, 0
    try:
        with error_boundary():
            _check_plugins(args)
            if not any(arg.startswith("-") for arg in args):
                _check_composes(name, args)
            elif {arg for arg in args if arg.startswith("-")} <= {"-m", "--multirun"}:
                _check_sweep_keys(name, [arg for arg in args if not arg.startswith("-")])
        # argv[0] stays: Lightning relaunches DDP ranks from it (a console script or a wrapper script)
        sys.argv = [saved[0], *args]
        app()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    if status and argv is None:  # the real command line: exit even where the caller ignores the status
        raise SystemExit(status)
    return status


FAILED_FILE = "failed.json"


def record_failure(run_dir: Path, err: BaseException, sweep_id: str | None = None) -> None:
    """Write ``failed.json`` (the one-line reason, and the sweep's id) into a failed sweep job's dir, for the
    sweep summary."""
    import json
    import logging
    import traceback

    if isinstance(err, SystemExit):  # an expected failure: its one line is already on stderr
        reason = f"exit status {err.code}: see the job's stderr"
        if err.__context__ is not None:
            reason = one_line(err.__context__)
    else:  # a bug: keep its traceback in the log
        logging.getLogger("mobilenet_pl").error("job in %s failed:\n%s", run_dir, traceback.format_exc())
        reason = f"{err.__class__.__name__}: {one_line(err)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"error": reason}
    if sweep_id is not None:
        record["sweep_id"] = sweep_id
    (run_dir / FAILED_FILE).write_text(json.dumps(record) + "\n")


def checkpoint_datamodule(data: DictConfig, hp: Mapping[str, Any], **overrides: Any) -> Any:
    """The DataModule of ``data`` (a conf/data option), checked against a checkpoint's classes and channels."""
    datamodule = instantiate(data, **overrides)
    if datamodule.num_classes != hp["num_classes"] or datamodule.in_chans != hp["in_chans"]:
        name = str(data._target_).rsplit(".", 1)[-1]
        raise ConfigError(
            f"data={name} has {datamodule.num_classes} classes and {datamodule.in_chans} channels; "
            f"the checkpoint expects {hp['num_classes']} and {hp['in_chans']}"
        )
    return datamodule


def output_path(out: str | None, ckpt_path: str, suffix: str) -> Path:
    """``out``, or the checkpoint's path with ``suffix`` (the export lands next to its checkpoint)."""
    return Path(out).expanduser() if out else Path(ckpt_path).expanduser().with_suffix(suffix)


def check_output(key: str, path: Path, overwrite: bool) -> Path:
    """``path`` may be written: not a folder, its folder not a file, no checkpoint replaced, and an existing
    file (an earlier export, maybe with other settings) replaced only with ``overwrite=true``."""
    if path.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is not allowed: it is a folder; give a file path")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is not allowed: {str(parent)!r} is a file, not a folder")
    if path.exists() and path.suffix == ".ckpt":
        raise ConfigError(f"{key}={str(path)!r} is not allowed: it would replace a checkpoint")
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{key}={str(path)!r} is not allowed: the file exists; set overwrite=true to replace it or choose another {key}"
        )
    check_writable(key, path)
    return path


def check_writable(key: str, path: Path) -> None:
    """A new file can be made where ``path`` will land, or `ConfigError` before any work: probed with a
    private folder of a unique name (``os.access`` says yes to root on a read-only mount, and a probe file of
    a fixed name could be a user's)."""
    import errno
    import os
    import tempfile

    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    try:
        probe = tempfile.mkdtemp(prefix=".mobilenet_pl-", dir=folder)
    except OSError as err:
        reason = "read-only file system" if err.errno == errno.EROFS else (err.strerror or type(err).__name__)
        raise ConfigError(f"{key}={str(path)!r} is not allowed: {str(folder)!r} is not writable ({reason})") from None
    os.rmdir(probe)
