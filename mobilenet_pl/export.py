"""Deployment export: ``python -m mobilenet_pl.export ckpt_path=PATH [format=onnx] [out=PATH] [check=true]``.

BatchNorm is folded into the convolution before it (`fold_batchnorm`), so the exported graph is conv ->
activation only; the batch axis stays dynamic. Metadata a deployment needs (class names, normalisation,
resolution, model name and width) travels inside the file: ONNX ``metadata_props`` or TorchScript
``_extra_files["metadata.json"]``. Read it back with `read_metadata`.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): with torch
2.14 it exports a MobileNet in ~2 s with outputs equal to eager, where the ``torch.export``-based one
takes ~40 s for the same graph.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_pl.cli import cli_args, parse_overrides, to_bool, to_number
from mobilenet_pl.models.factory import resolve_model_name
from mobilenet_pl.models.layers import ConvBNAct

DEFAULT_OPSET = 17
FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-4  # max abs logit difference accepted between the export and eager PyTorch
METADATA_FILE = "metadata.json"  # TorchScript _extra_files key

# -- BatchNorm folding -----------------------------------------------------------------------------------


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` in eval mode; the arithmetic runs in float64 so the
    folded weights are the rounded exact values, not a float32 chain of rounding errors."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=weight.dtype)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(bias)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(bias)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device)
    fused.weight = nn.Parameter((weight * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype))
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv before it.

    Covers every `ConvBNAct` (``conv`` gets a bias, ``bn`` becomes ``nn.Identity``) and any
    ``nn.Sequential`` holding a Conv2d directly followed by a BatchNorm2d (torchvision's
    ``Conv2dNormActivation``), so peers can be exported the same way. Eval-mode outputs are unchanged up
    to float rounding; ``model`` itself is not modified. The copy's state dict has no ``bn`` keys, so it
    is for inference and export, not for further training.

    Example:
        >>> import torch
        >>> from mobilenet_pl import mobilenet_v2
        >>> model = mobilenet_v2(width=0.5, num_classes=10).eval()
        >>> folded = fold_batchnorm(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> bool(torch.allclose(model(x), folded(x), atol=1e-5))
        True
        >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        False
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):  # a list: children are replaced while walking
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = _fold_pair(module.conv, module.bn)
            module.bn = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = _fold_pair(conv, bn), nn.Identity()
    return folded


# -- metadata --------------------------------------------------------------------------------------------


def _in_chans(model: nn.Module) -> int:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("cannot infer the input channels: the model has no Conv2d")
    return int(first_conv.in_channels)


def build_metadata(
    model: nn.Module,
    resolution: int,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    width: float | None = None,
) -> dict[str, Any]:
    """The metadata embedded in an export; keys whose value is unknown (None) are left out."""
    from mobilenet_pl import __version__

    in_chans = _in_chans(model)
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != in_chans:
            raise ValueError(f"{key} has {len(values)} values but the model takes {in_chans} input channels")
    meta: dict[str, Any] = {
        "model": name or type(model).__name__,
        "width": width,
        "resolution": int(resolution),
        "in_chans": in_chans,
        "num_classes": getattr(model, "num_classes", None),
        "class_names": list(class_names) if class_names is not None else None,
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "input_layout": "NCHW float32, normalised per channel as (x - mean) / std",
        "producer": f"mobilenet_pl {__version__}",
    }
    return {key: value for key, value in meta.items() if value is not None}


def _encode(value: Any) -> str:
    # strings stay readable for other tools (Netron shows them as is); everything else is JSON
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of an ONNX (``.onnx``) or TorchScript export, values decoded (lists, numbers, strings)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {prop.key: _decode(prop.value) for prop in model.metadata_props}
    extra = {METADATA_FILE: ""}
    _load_torchscript(path, extra)
    return dict(json.loads(extra[METADATA_FILE])) if extra[METADATA_FILE] else {}


# -- export ----------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int = 224,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    name: str | None = None,
    width: float | None = None,
) -> Path:
    """Fold BatchNorm, export to ONNX with a dynamic batch axis and embed metadata; returns ``path``.

    The graph has one input ``input`` (N x C x resolution x resolution, float32) and one output
    ``logits``. ``name`` and ``width`` describe the model in the metadata (see `build_metadata`).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(model, resolution, class_names, mean, std, name, width)
    folded = fold_batchnorm(model).float().cpu()
    example = torch.randn(1, meta["in_chans"], resolution, resolution)
    with warnings.catch_warnings():
        # the exporter announces its own deprecation; the traced input-size check is a constant for a
        # fixed resolution, which is what the TracerWarning is about
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            folded,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, _encode(value)
    proto.doc_string = f"{meta['model']} exported by {meta['producer']}"
    onnx.save(proto, str(path))
    return path


def export_torchscript(
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
    """Fold BatchNorm, script the model and save it with metadata in ``_extra_files``; returns ``path``.

    Scripting (not tracing) keeps any batch size and image size and the model's own input-size check.
    Load with ``torch.jit.load(path)``; read the metadata with `read_metadata`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(model, resolution, class_names, mean, std, name, width)
    folded = fold_batchnorm(model).float().cpu()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream (one FutureWarning per submodule) but is still what the
        # C++ and mobile runtimes load
        warnings.filterwarnings("ignore", category=FutureWarning)
        scripted = torch.jit.script(folded)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
    return path


def _load_torchscript(path: str | Path, extra_files: dict[str, Any] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # see export_torchscript
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)


# -- parity ----------------------------------------------------------------------------------------------


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; ``threads`` defaults to torch's intra-op thread count, so ONNX and
    PyTorch timings use the same cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_call(session: Any, feed: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument call running ``session`` on ``feed`` (for timing loops)."""
    return lambda: session.run(None, feed)


def _example_input(model: nn.Module, resolution: int, batch_size: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, _in_chans(model), resolution, resolution, generator=generator)


@torch.no_grad()
def check_parity(model: nn.Module, path: str | Path, resolution: int, batch_size: int = 3, seed: int = 0) -> float:
    """Max abs logit difference between eager ``model`` (eval mode) and the export at ``path`` (ONNX run in
    onnxruntime, or TorchScript), on a random batch; ``batch_size`` differs from the export's batch of 1
    so the dynamic axis is exercised."""
    model = copy.deepcopy(model).float().cpu().eval()
    x = _example_input(model, resolution, batch_size, seed)
    expected = model(x)
    if Path(path).suffix == ".onnx":
        session = ort_session(path)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    else:
        got = _load_torchscript(path)(x)
    return float((got - expected).abs().max())


# -- CLI -------------------------------------------------------------------------------------------------

USAGE = """usage: python -m mobilenet_pl.export ckpt_path=PATH [format=onnx|torchscript] [out=PATH] [check=true]
                                     [opset=17] [resolution=R] [mean=M1,M2,M3] [std=S1,S2,S3]

Loads a mobilenet_pl Lightning checkpoint (weights_only), folds BatchNorm into the convolutions and
exports the model with a dynamic batch axis and metadata (class names, mean/std, resolution, model
name and width). Defaults: format=onnx, out=<checkpoint stem>.onnx (.ts for torchscript) next to the
checkpoint, check=true (max abs logit difference to eager PyTorch on a random batch of 3, must be
<= 1e-4), opset=17, resolution = the checkpoint's, mean/std = ImageNet's for 3-channel models (else
left out unless given). INT8: python -m mobilenet_pl.quantize ckpt_path=PATH."""

DEFAULTS: dict[str, str] = {
    "ckpt_path": "",
    "format": "onnx",
    "out": "",
    "check": "true",
    "opset": str(DEFAULT_OPSET),
    "resolution": "",
    "mean": "",
    "std": "",
}


def to_floats(key: str, value: str) -> list[float]:
    """``"0.5,0.5,0.5"`` -> ``[0.5, 0.5, 0.5]``, naming ``key`` in the error."""
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"{key} must be comma-separated numbers, got {value!r}") from None


def load_model(ckpt_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain MobileNet (eval mode, EMA weights if any) and hyperparameters of our checkpoint."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ValueError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        module = MobileNetClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, someone else's checkpoint, a pickle with code in it
        raise ValueError(
            f"ckpt_path={str(path)!r} is not a mobilenet_pl checkpoint ({err.__class__.__name__})"
        ) from err
    return module.to_model(), dict(module.hparams)


def export_checkpoint(opts: dict[str, str]) -> tuple[Path, float | None]:
    """Run the CLI's work for parsed ``opts``; returns the export's path and the parity diff (or None)."""
    fmt = opts["format"]
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if not opts["ckpt_path"]:
        raise ValueError("ckpt_path=PATH is required (a checkpoint written by python -m mobilenet_pl.train)")
    check = to_bool("check", opts["check"])
    opset = int(to_number("opset", opts["opset"], int, 9))
    model, hp = load_model(opts["ckpt_path"])
    resolution = int(to_number("resolution", opts["resolution"], int, 32)) if opts["resolution"] else hp["resolution"]
    mean = to_floats("mean", opts["mean"]) if opts["mean"] else None
    std = to_floats("std", opts["std"]) if opts["std"] else None
    if hp["in_chans"] == 3 and mean is None and std is None:
        from mobilenet_pl.lit.data import IMAGENET_MEAN, IMAGENET_STD

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    ckpt = Path(opts["ckpt_path"]).expanduser()
    out = Path(opts["out"]) if opts["out"] else ckpt.with_suffix(".onnx" if fmt == "onnx" else ".ts")
    names = hp.get("class_names") or [str(i) for i in range(hp["num_classes"])]
    common: dict[str, Any] = {"name": resolve_model_name(hp["model"]["name"]), "width": hp["model"]["width"]}
    if fmt == "onnx":
        export_onnx(model, out, resolution, names, mean, std, opset, **common)
    else:
        export_torchscript(model, out, resolution, names, mean, std, **common)
    return out, check_parity(model, out, resolution) if check else None


def main(argv: Sequence[str] | None = None) -> int:
    args = cli_args(argv, USAGE)
    if args is None:
        return 0
    try:
        out, diff = export_checkpoint(parse_overrides(args, DEFAULTS))
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if diff is not None:
        verdict = "ok" if diff <= PARITY_TOLERANCE else "FAILED"
        print(f"parity with eager PyTorch: max abs logit difference {diff:.2e} (<= {PARITY_TOLERANCE:g}: {verdict})")
        if diff > PARITY_TOLERANCE:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
