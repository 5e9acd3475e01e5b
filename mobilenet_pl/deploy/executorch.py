"""ExecuTorch ``.pte`` export (XNNPACK delegate) with embedded metadata, and its runtime from Python.

One graph capture: ``torch.export.export`` -> ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])``
-> ``to_executorch()``. The program has a fixed batch of 1 (a phone classifies one frame at a time, and
memory is planned for exactly that input). The deployment metadata (`build_metadata`: class names,
mean/std, resolution, model name and width) travels inside the program as an ExecuTorch constant method
``metadata`` returning one JSON string: on a device, ``module.execute("metadata")`` (C++) or
``Module.execute("metadata")`` (Android/iOS) reads it; here `read_pte_metadata` does.

ExecuTorch's runtime replaces TorchScript's mobile interpreter, which is deprecated upstream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_pl.app.errors import ConfigError, require
from mobilenet_pl.deploy.fold import fold_batchnorm
from mobilenet_pl.deploy.metadata import build_metadata

METADATA_METHOD = "metadata"  # the constant method holding the metadata JSON
EXECUTORCH_NEEDS = "format=executorch"


def require_executorch(needed_for: str = EXECUTORCH_NEEDS) -> None:
    """Raise `MissingExtraError` (one line: the pip command) unless executorch and torchao import."""
    # torchao registers an Enum as a pytree constant on import, which torch 2.14 logs as a deprecation
    # warning on every run: noise a user cannot act on
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    require("executorch.exir", needed_for)
    require("torchao.quantization.pt2e", needed_for)


def capture(model: nn.Module, example: Tensor, dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` on ``example``; a model that cannot be captured is bad input
    (`ConfigError` with the exporter's first line), not a bug of ours."""
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    try:
        return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as err:  # torch.export raises many types (Unsupported, UserError, guard failures...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConfigError(f"the model cannot be exported with torch.export ({type(err).__name__}: {first})") from err


def lower(program: torch.export.ExportedProgram, meta: dict[str, Any] | None = None) -> bytes:
    """The ``.pte`` bytes of an exported program, delegated to XNNPACK, with ``meta`` as constant method."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    constants = {METADATA_METHOD: json.dumps(meta)} if meta is not None else None
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constants)
    return bytes(edge.to_executorch().buffer)


def example_input(in_chans: int, resolution: int, batch_size: int = 1) -> Tensor:
    return torch.randn(batch_size, in_chans, resolution, resolution, generator=torch.Generator().manual_seed(0))


def export_executorch(
    model: nn.Module,
    path: str | Path,
    resolution: int = 224,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    name: str | None = None,
    width: float | None = None,
) -> Path:
    """Fold BatchNorm, capture with ``torch.export`` (batch 1), lower to XNNPACK and write ``path``.

    Example (slow: lowering takes tens of seconds)::

        export_executorch(model, "model.pte", 224, class_names)
        Runtime.get().load_program("model.pte").load_method("forward").execute((x,))
    """
    require_executorch()
    meta = build_metadata(model, resolution, class_names, mean, std, name, width)
    folded = fold_batchnorm(model).float().cpu()
    program = capture(folded, example_input(meta["in_chans"], resolution))
    path = Path(path)
    path.write_bytes(lower(program, meta))
    return path


# what the native runtime prints on every start (cpuinfo probing ARM files on x86, the thread pool size)
_NATIVE_NOISE = re.compile(r"^\[(cpuinfo_utils|threadpool)\.cpp:\d+\]")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop the runtime's start-up lines that C++ writes to file descriptor 2; everything else is passed
    on (all of it when the block fails)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if failed or not _NATIVE_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_program(path: str | Path) -> Any:
    """The ExecuTorch program at ``path`` in the Python runtime (``executorch.runtime``)."""
    runtime = require("executorch.runtime", "running .pte files")
    with quiet_native_stderr():
        return runtime.Runtime.get().load_program(Path(path))


def load_method(path: str | Path, name: str = "forward") -> Any:
    """Method ``name`` of the program at ``path``, loaded (XNNPACK initialises its kernels here)."""
    program = load_program(path)
    with quiet_native_stderr():
        return program.load_method(name)


def read_pte_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata a ``.pte`` written here carries (``{}`` for one without the ``metadata`` method)."""
    if METADATA_METHOD not in load_program(path).method_names:
        return {}
    return dict(json.loads(load_method(path, METADATA_METHOD).execute(())[0]))


def pte_forward(path: str | Path) -> Callable[[Tensor], Tensor]:
    """Logits of the ``.pte`` at ``path`` for a batch, run one image at a time (the program's batch is 1)."""
    method = load_method(path)

    def forward(x: Tensor) -> Tensor:
        return torch.cat([method.execute((x[i : i + 1].contiguous(),))[0] for i in range(len(x))])

    return forward


def pte_call(path: str | Path, x: Tensor) -> Callable[[], Any]:
    """A no-argument call running the ``.pte`` at ``path`` on the batch-1 input ``x`` (for timing loops)."""
    method = load_method(path)
    inputs = (x[:1].contiguous(),)
    return lambda: method.execute(inputs)


def pte_accuracy(path: str | Path, loader: Any) -> tuple[float, int]:
    """Top-1 of a ``.pte`` classifier over ``loader``'s ``(images, labels)`` batches, and the count."""
    forward = pte_forward(path)
    correct = total = 0
    for x, y in loader:
        correct += int((forward(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(1, total), total
