"""Weights & Biases that never blocks: online with a key and a network, offline otherwise.

``mode: auto`` decides before any W&B call: an API key must exist (env var or ``wandb login``) and
api.wandb.ai must answer a TCP connect within a second; otherwise the run is logged offline, the
model is not uploaded (W&B refuses ``log_model`` offline), and the ``wandb sync`` command is printed.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: str = "auto") -> str:
    """``online``, ``offline`` or ``disabled``; ``auto`` (and WANDB_MODE, when set) decide as above."""
    mode = os.environ.get("WANDB_MODE", mode) if mode == "auto" else mode
    if mode not in ("auto", "online", "offline", "disabled", "dryrun", "run"):
        raise ValueError(f"logger.mode must be one of auto, online, offline, disabled; got {mode!r}")
    if mode == "dryrun":
        return "offline"
    if mode in ("auto", "run"):
        return "online" if _has_api_key() and _reachable() else "offline"
    return mode


class TrackedWandbLogger(WandbLogger):
    """A Lightning ``WandbLogger`` that knows the mode it resolved to (``online``, ``offline``,
    ``disabled``), so `finish` can tell whether a ``wandb sync`` is needed."""

    def __init__(self, *, run_mode: str, **kwargs: Any) -> None:
        super().__init__(mode=run_mode, **kwargs)
        self.resolved_mode = run_mode
        # Lightning passes anonymous=None to wandb.init always; W&B then warns "The anonymous setting has no
        # effect" on every run. Not passing it is the same run (tests/app/test_noise.py checks the attribute).
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def wandb_logger(
    *,
    save_dir: str,
    project: str = "mobilenet_pl",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    log_model: bool | Literal["all"] = True,
) -> TrackedWandbLogger:
    """A `TrackedWandbLogger` in the mode ``resolve_mode`` picks (a Lightning ``WandbLogger``)."""
    resolved = resolve_mode(mode)
    if resolved != "online":
        log_model = False
    os.environ["WANDB_MODE"] = resolved  # so every W&B call of this process agrees, no prompts
    os.environ.setdefault("WANDB_SILENT", "true")
    options: dict[str, Any] = {"project": project, "entity": entity, "name": name, "group": group}
    options.update(tags=list(tags or []), save_dir=save_dir)

    logger = TrackedWandbLogger(run_mode=resolved, log_model=log_model, settings=_settings(), **options)
    if resolved == "online":
        try:
            logger.experiment  # noqa: B018 -- start the run now, so a dead server is found before training
        except Exception as err:  # the service refused or timed out: keep training, log locally
            import wandb

            log.warning("W&B online start failed (%s: %s); logging offline instead", err.__class__.__name__, err)
            wandb.finish()
            os.environ["WANDB_MODE"] = "offline"
            logger = TrackedWandbLogger(run_mode="offline", log_model=False, settings=_settings(), **options)
    return logger


def _settings() -> Any:
    import wandb

    # no console capture thread and a bounded start: training must never wait on W&B
    return wandb.Settings(console="off", init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 30)), silent=True)


def finish(logger: TrackedWandbLogger) -> str | None:
    """Close the run (one W&B run per job, even inside a multirun); return the sync hint if offline."""
    import wandb

    run = wandb.run
    hint = None
    if run is not None and logger.resolved_mode == "offline":
        hint = f"wandb sync {Path(run.dir).parent}"
    wandb.finish()
    return hint
