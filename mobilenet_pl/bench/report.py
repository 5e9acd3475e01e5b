"""What a benchmark run reports: the environment it measured and the table of results."""

from __future__ import annotations

import os
from typing import Any

import torch

from mobilenet_pl.bench.step import Config


def environment(cfg: Config) -> dict[str, Any]:
    """Hardware and library versions (``torch.utils.collect_env``), so a result file says what it measured."""
    import timm
    import torchvision
    from torch.utils.collect_env import get_env_info

    info = get_env_info()._asdict()
    cpu_lines = str(info.get("cpu_info") or "").splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("Model name")), None)
    env: dict[str, Any] = {
        "cpu": cpu or info["python_platform"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timm": timm.__version__,
        "torchvision": torchvision.__version__,
        "gpu": torch.cuda.get_device_name() if cfg.device == "cuda" else None,
        "collect_env": {key: value for key, value in info.items() if key not in ("pip_packages", "conda_packages")},
    }
    for module in ("executorch", "torchao"):
        try:
            from importlib.metadata import version

            env[module] = version(module)
        except Exception:  # not installed
            env[module] = None
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime"] = None
    return env


def format_table(results: dict[str, Any]) -> str:
    lines = [f"{'section':<10}{'group':<14}{'contender':<76}{'value':>12} {'unit':<16}{'x best peer':>11}"]
    for section, groups in results.items():
        for name, group in groups.items():
            best = group["best_peer"]
            for key, entry in group["entries"].items():
                ratio = entry["ratio_to_best_peer"]
                mark = " (best peer)" if key == best else ""
                lines.append(
                    f"{section:<10}{name:<14}{entry['label'] + mark:<76}{entry['value']:>12.2f} {group['unit']:<16}"
                    f"{'-' if ratio is None else f'{ratio:.2f}x':>11}"
                )
            if "overhead" in group:
                lines.append(
                    f"{section:<10}{name:<14}{'Lightning overhead over the plain loop':<76}{100 * group['overhead']:>11.1f}%"
                )
            for decode_on, wait in group.get("data_wait_fraction", {}).items():
                what = f"app decode_on={decode_on}: share of step time waiting for data"
                lines.append(f"{section:<10}{name:<14}{what:<76}{100 * wait:>11.1f}%")
            for mode, check in group.get("loss_check", {}).items():
                if not isinstance(check, dict):
                    continue  # the reference loss
                what = (
                    f"{mode}: rel. error of 1st loss, update vs float64; first {len(check['losses'])} steps "
                    f"{check['first_steps_s']:.1f} s"
                )
                verdict = "correct" if check["correct"] else "WRONG"
                diffs = f"{check['loss_rel_error']:.1e}, {check['update_rel_error']:.1e}"
                lines.append(f"{section:<10}{name:<14}{what:<76}{diffs:>17} {verdict}")
    return "\n".join(lines)
