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
) -> Any:
    """A Lightning ``WandbLogger`` in the mode ``resolve_mode`` picks, with the resolved config attached."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    if resolved != "online":
        log_model = False
    os.environ["WANDB_MODE"] = resolved  # so every W&B call of this process agrees, no prompts
    os.environ.setdefault("WANDB_SILENT", "true")

    def make(run_mode: str, upload: bool | Literal["all"]) -> Any:
        logger = WandbLogger(
            project=project,
            entity=entity,
            name=name,
            group=group,
            tags=list(tags or []),
            save_dir=save_dir,
            mode=run_mode,
            log_model=upload,
            settings=_settings(),
        )
        logger.resolved_mode = run_mode  # type: ignore[attr-defined]
        return logger

    logger = make(resolved, log_model)
    if resolved == "online":
        try:
            logger.experiment  # noqa: B018 -- start the run now, so a dead server is found before training
        except Exception as err:  # the service refused or timed out: keep training, log locally
            import wandb

            log.warning("W&B online start failed (%s: %s); logging offline instead", err.__class__.__name__, err)
            wandb.finish()
            os.environ["WANDB_MODE"] = "offline"
            logger = make("offline", False)
    return logger


def _settings() -> Any:
    import wandb

    # no console capture thread and a bounded start: training must never wait on W&B
    return wandb.Settings(console="off", init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 30)), silent=True)


def finish(logger: Any) -> str | None:
    """Close the run (one W&B run per job, even inside a multirun); return the sync hint if offline."""
    import wandb

    run = wandb.run
    hint = None
    if run is not None and getattr(logger, "resolved_mode", "online") == "offline":
        hint = f"wandb sync {Path(run.dir).parent}"
    wandb.finish()
    return hint
