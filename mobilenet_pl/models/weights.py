"""The one reader of weight files, and loading what it read into a model.

`read_weights` reads our training checkpoints (Lightning ``.ckpt`` of `mobilenet_pl.lit.MobileNetClassifier`),
torchvision/timm/mobilenet_pl state dicts (``.pth``, ``.pt``, ``.bin``, any wrapper Lightning, DDP or
``torch.compile`` put around them) and ``.safetensors`` files. It never runs pickled code
(``torch.load(weights_only=True, map_location="cpu")``, safetensors' own loader) and refuses a bad file
with one `WeightsFileError` line naming the argument, the file and what is wrong with it. Every command
(train's ``ckpt_path``, ``auto_resume`` and ``model.pretrained``; eval, export, quantize) and every library
path (``pretrained=``, `mobilenet_pl.from_checkpoint`, ``MobileNetClassifier.load_from_checkpoint``)
reads through it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_pl._checks import MAX_DETAIL, first_line
from mobilenet_pl.models import convert
from mobilenet_pl.models.convert import (
    PRETRAINED,
    available_pretrained,
    convert_state_dict,
    state_dict_problems,
    unwrap_state_dict,
)
from mobilenet_pl.models.hparams import DATA_KEYS, StateDict, is_our_checkpoint, lightning_weights, model_hparams
from mobilenet_pl.models.registry import build_registered

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6 (and TorchScript archives)


class WeightsFileError(ValueError):
    """A weights file that cannot be used, in one line: ``KEY='PATH' is not allowed: REASON``.

    Attributes:
        key: the argument or config key that named the file (``pretrained``, ``ckpt_path``, ...).
        path: the file as it was given.
        reason: what is wrong with it (the text after ``is not allowed:``).
    """

    def __init__(self, key: str, path: str | Path, reason: str) -> None:
        self.key, self.path, self.reason = key, str(path), reason
        super().__init__(f"{key}={str(path)!r} is not allowed: {reason}")

    def __reduce__(self) -> Any:  # picklable, e.g. across DDP ranks and multiprocessing
        return (self.__class__, (self.key, self.path, self.reason))


@dataclass(frozen=True)
class Weights:
    """What `read_weights` read.

    Attributes:
        state_dict: plain MobileNet weights in our key layout (``stem.*``, ``stages.*``, ``head.*``,
            ``classifier.*``); from a training checkpoint, the EMA copy when the run kept one and ``ema``.
        hparams: a training checkpoint's ``hyper_parameters`` (``model`` completed with every default and
            its canonical name); None for a plain state dict, whose architecture is not in the file.
    """

    state_dict: StateDict
    hparams: dict[str, Any] | None


def read_weights(
    path: str | Path, *, key: str = "path", checkpoint: bool = False, ema: bool = True, finite: bool = False
) -> Weights:
    """Read a weights file safely and check it; every bad file is one `WeightsFileError` line.

    Args:
        path: the file.
        key: the argument or config key that named it, for the error line.
        checkpoint: require one of our training checkpoints (its architecture is read from it).
        ema: from a training checkpoint, take the EMA weights when the run kept them.
        finite: refuse a file whose floating-point tensors hold NaN or infinity.

    Raises:
        WeightsFileError: the file is missing, a folder, empty, truncated, not a weights file, pickles
            objects (only ``weights_only=False`` would load it), a checkpoint of another project (or a
            plain state dict where ``checkpoint`` asks for ours), its hyperparameters disagree with its
            weights, or (``finite``) it holds NaN/inf.
    """

    def refuse(reason: str) -> WeightsFileError:
        return WeightsFileError(key, path, reason)

    raw = _load(Path(path).expanduser(), refuse)
    if not isinstance(raw, Mapping):
        raise refuse(f"not a readable weights file: it holds a {type(raw).__name__}, not a state dict of named tensors")
    if is_our_checkpoint(raw):
        hparams = _our_hparams(raw, refuse)
        tensors: Mapping[str, Any] = raw["state_dict"]
        _check_fits(hparams, tensors, refuse)
        weights = Weights(lightning_weights(tensors, ema=ema), hparams)
    elif checkpoint:
        if isinstance(raw.get("hyper_parameters"), Mapping):
            keys = sorted(map(str, raw["hyper_parameters"]))[:6]
            raise refuse(
                f"a checkpoint of another project: its hyper_parameters name no mobilenet_pl model (keys {keys})"
            )
        raise refuse(
            "not a mobilenet_pl training checkpoint: it holds no mobilenet_pl hyperparameters (a plain state dict?), "
            "so its architecture cannot be read; start from its weights instead (model.pretrained=PATH in the app, "
            "mobilenet_v2(width=..., small_input=..., pretrained=PATH) in Python)"
        )
    else:
        tensors = _plain_tensors(raw, refuse)
        try:
            weights = Weights(convert_state_dict(tensors), None)
        except (ValueError, KeyError) as err:  # no MobileNet of torchvision, timm or ours
            raise refuse(f"not a readable weights file: {first_line(err, MAX_DETAIL)}") from err
    if finite:
        broken = [name for name, t in tensors.items() if _floating(t) and not bool(t.isfinite().all())]
        if broken:
            raise refuse(
                f"{len(broken)} weight tensor(s) hold NaN/inf (first: {broken[0]}); "
                "the training diverged before this file was written"
            )
    return weights


def _load(file: Path, refuse: Any) -> Any:
    """The file's contents, read without running pickled code."""
    if not file.exists():
        raise refuse("the file does not exist")
    if file.is_dir():
        raise refuse("it is a folder, not a weights file")
    with file.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise refuse("the file is empty (0 bytes)")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except Exception as err:  # the header is garbage or cut short
            raise refuse(
                f"not a readable weights file: not a safetensors file ({first_line(err, MAX_DETAIL)})"
            ) from err
    zipped = head == _ZIP_MAGIC
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols and mmap: the refusal says enough
            warnings.simplefilter("ignore", UserWarning)
            # mmap: checking a checkpoint reads its shapes, not its tensor data (zip files only)
            return torch.load(file, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as err:
        text = str(err)
        detail = _torch_detail(text)
        if "Unsupported global" in text:  # a class or function reference: unpickling it would run code
            raise refuse(
                "it holds pickled objects: not a loadable tensor-only checkpoint, refused for safety (Weights only load "
                f"failed: {detail}); only torch.load(weights_only=False) reads it: do that yourself, for a file you trust"
            ) from err
        if "TorchScript" in text or file.suffix in (".onnx", ".ts", ".pt2", ".pte"):
            raise refuse(
                "not a readable weights file: an exported model, not a loadable tensor-only checkpoint "
                "(an ONNX/TorchScript export has BatchNorm folded away: read the training .ckpt)"
            ) from err
        if (zipped and "PytorchStreamReader" in text) or isinstance(err, EOFError):
            raise refuse(f"the file is truncated or corrupt ({detail})") from err
        raise refuse(f"not a readable weights file: not a loadable tensor-only checkpoint ({detail})") from err


def _torch_detail(text: str) -> str:
    """The useful part of a torch.load error: the unpickler's reason, or the first sentence."""
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = first_line(match[1] if match else text)
    if detail.startswith("Unsupported global"):
        detail = detail.split(" was not an allowed global")[0]
    detail = detail.split(". ")[0]  # torch adds advice after the reason
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 3] + "..."


def _floating(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


def _plain_tensors(raw: Mapping[Any, Any], refuse: Any) -> StateDict:
    """The tensors of a state dict (inside its wrapper, if any), keyed by name."""
    inner = next((raw[c] for c in ("state_dict", "model", "state_dict_ema") if isinstance(raw.get(c), Mapping)), raw)
    odd = [k for k in inner if not isinstance(k, str)]
    if odd:
        raise refuse(f"not a readable weights file: its keys are not parameter names (e.g. {odd[0]!r})")
    tensors = unwrap_state_dict(inner)
    if not tensors:
        raise refuse("not a readable weights file: it holds no named tensors")
    return tensors


def _our_hparams(raw: Mapping[str, Any], refuse: Any) -> dict[str, Any]:
    """A training checkpoint's hyperparameters, checked as plain values of this version."""
    hparams = dict(raw["hyper_parameters"])
    try:
        hparams["model"] = model_hparams(hparams["model"])
    except ValueError as err:  # an unknown model name or keyword
        raise refuse(f"a checkpoint of another project or version: {first_line(err, MAX_DETAIL)}") from err
    for name in DATA_KEYS:
        value = hparams.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise refuse(f"a checkpoint of another project or version: hyper_parameters {name}={value!r}")
    return hparams


def describe(hparams: Mapping[str, Any]) -> str:
    """``mobilenet_v2 width 0.5 (10 classes, 3 channels)``: what a checkpoint holds, for messages."""
    model = hparams.get("model")
    if not isinstance(model, Mapping):
        return "an unknown model"
    return (
        f"{model.get('name')} width {model.get('width')} "
        f"({hparams.get('num_classes')} classes, {hparams.get('in_chans')} channels)"
    )


def _check_fits(hparams: Mapping[str, Any], tensors: Mapping[str, Any], refuse: Any) -> None:
    """Both weight copies of a training checkpoint fit the architecture its hyperparameters describe."""
    arch = dict(hparams["model"])
    name = arch.pop("name")
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = build_registered(name, num_classes=hparams["num_classes"], in_chans=hparams["in_chans"], **arch)
    except (ValueError, TypeError) as err:  # e.g. width=-1 in a crafted file
        raise refuse(f"a checkpoint of another project or version: {first_line(err, MAX_DETAIL)}") from err
    copies = {False: lightning_weights(tensors, ema=False)}
    if any(k.startswith("ema.") for k in tensors):
        copies[True] = lightning_weights(tensors, ema=True)
    for is_ema, weights in copies.items():
        problems = state_dict_problems(model, weights)
        if problems:
            copy = "EMA weights" if is_ema else "weights"
            first, _, more = problems[0].strip().partition(", ")  # the first key of the first kind of misfit
            raise refuse(
                f"its hyperparameters ({describe(hparams)}) disagree with its {copy}: {first}{' ...' if more else ''}"
            )


# -- loading into a model ---------------------------------------------------------------------------------
def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load our-layout weights into ``model``, checked key by key.

    The classifier is kept freshly initialised when ``num_classes`` differs from the checkpoint's,
    and layers a ``features_only`` model does not build are ignored.
    """
    expected = model.state_dict()
    state_dict = {
        k: v
        for k, v in state_dict.items()
        if k in expected and not (k.startswith("classifier.") and v.shape != expected[k].shape)
    }
    # what the model builds but the checkpoint lacks may only be a (reset) classifier
    missing_ok = {k: expected[k] for k in expected if k.startswith("classifier.") and k not in state_dict}
    problems = state_dict_problems(model, {**state_dict, **missing_ok})
    if problems:
        raise ValueError("state dict does not fit the model (is the width or model right?):\n" + "\n".join(problems))
    model.load_state_dict(state_dict, strict=False)


def load_pretrained(model: nn.Module, name: str, width: float, pretrained: bool | str | Path) -> None:
    """Load ImageNet weights (``True`` or a tag) or a local file into ``model`` in place (`load_weights`).

    A local file may be a torchvision, timm or mobilenet_pl state dict, or one of our training
    checkpoints (its EMA weights when the run kept an EMA: what validation, test and eval used).
    """
    tags = PRETRAINED.get((name, float(width)), {})
    if isinstance(pretrained, Path) or (isinstance(pretrained, str) and pretrained not in tags):
        if (
            isinstance(pretrained, str)
            and not Path(pretrained).expanduser().exists()
            and not re.search(r"[/\\.]", pretrained)
        ):
            raise ValueError(
                f"pretrained={pretrained!r} is neither a tag of {name} width {width:g} ({list(tags) or 'none'}) "
                f"nor an existing file. Weights exist for: {available_pretrained()}."
            )
        weights = read_weights(pretrained, key="pretrained")
        if weights.hparams is not None:
            _check_same_architecture(model, name, pretrained, weights.hparams["model"])
        state_dict = weights.state_dict
    else:
        if not tags:
            raise ValueError(
                f"no ImageNet weights for {name} width {width:g}. Weights exist for: {available_pretrained()}. "
                "Pass pretrained='/path/to/weights.pth' (a torchvision, timm or mobilenet_pl state dict) instead."
            )
        source = tags[pretrained] if isinstance(pretrained, str) else next(iter(tags.values()))
        try:
            state_dict = convert_state_dict(
                convert._download(source), source.source
            )  # looked up here: tests replace it
        except Exception as err:
            raise RuntimeError(
                f"could not fetch {source.source} weights {source.name!r} ({err.__class__.__name__}); offline? "
                f"Download them once where there is a network, or pass pretrained='/path/to/weights.pth'. "
                f"Weights exist for: {available_pretrained()}."
            ) from err
    load_weights(model, state_dict)


def _check_same_architecture(model: nn.Module, name: str, path: str | Path, arch: Mapping[str, object]) -> None:
    # a width mismatch shows in the shapes; these two would load silently into a different network
    small_input = model.stem.conv.stride[0] == 1  # type: ignore[union-attr,index]
    if arch["name"] != name or bool(arch["small_input"]) != small_input:
        raise ValueError(
            f"pretrained={str(path)!r} was trained as {arch['name']} with small_input={arch['small_input']}, "
            f"but this model is {name} with small_input={small_input}: build it with the checkpoint's settings, "
            "or use mobilenet_pl.from_checkpoint(path), which reads them"
        )
