"""`uniformer env`: the machine, for bug reports; thin layer over `engine.environment`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from uniformer_cli import engine
from uniformer_cli.cli.cache import human_size
from uniformer_cli.cli.output import JsonFlag, Output, OutputOption, Result
from uniformer_cli.cli.text import escape


def env(json_output: JsonFlag = False, output: OutputOption = None) -> None:
    """Print what a bug report needs: versions, CPU features, GPUs, threads, the cache and the settings.

    Versions of Python, torch, the decoders (av, decord, torchcodec), openvino and the other packages
    that decide results or speed; the CPU model and its AVX-512, native bf16 and AMX support; CUDA and
    MPS devices; torch's threads; the cache's folders and size; and the HF_*, UNIFORMER_* and thread
    variables set (tokens shown only as `set`). Paste it into the issue.

    Examples:
    `uniformer env`
    `uniformer env --json`
    """
    record = engine.environment.environment()
    Output(json_output, output).finish(Result([record], document=record), lambda console: _print(console, record))


def _print(console: Console, record: dict[str, object]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    packages: dict[str, str | None] = record["packages"]  # type: ignore[assignment]
    cpu: dict[str, object] = record["cpu"]  # type: ignore[assignment]
    gpu: dict[str, object] = record["gpu"]  # type: ignore[assignment]
    threads: dict[str, int] = record["threads"]  # type: ignore[assignment]
    cache: dict[str, object] = record["cache"]  # type: ignore[assignment]
    settings: dict[str, str] = record["settings"]  # type: ignore[assignment]
    features = [name for name in engine.environment.CPU_FEATURES if cpu[name]]
    devices: list[dict[str, object]] = gpu["cuda_devices"]  # type: ignore[assignment]
    rows = [
        ("uniformer", str(record["uniformer"])),
        ("python", f"{record['python']} ({record['executable']})"),
        ("platform", str(record["platform"])),
        ("packages", ", ".join(f"{name} {version or '-'}" for name, version in packages.items())),
        ("cpu", f"{cpu['model']} ({cpu['machine']}), {cpu['usable_cores']} of {cpu['cores']} cores usable"),
        (
            "cpu features",
            f"{', '.join(features) or 'none of ' + ', '.join(engine.environment.CPU_FEATURES)}; native bf16 "
            f"{'yes' if cpu['native_bf16'] else 'no'}; torch uses {cpu['torch_capability']}",
        ),
        ("cuda", _cuda(gpu["cuda"], devices)),
        ("mps", "available" if gpu["mps"] else "no"),
        ("threads", f"torch {threads['torch']}, inter-op {threads['interop']}"),
        (
            "cache",
            f"{cache['home']} and {cache['hub_cache']}: {human_size(int(cache['size_bytes']))}, "  # type: ignore[call-overload]
            f"zoo downloads: {cache['models']}" + (" (HF_HUB_OFFLINE)" if cache["offline"] else ""),
        ),
        ("settings", ", ".join(f"{name}={value}" for name, value in settings.items()) or "none"),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)


def _cuda(version: object, devices: list[dict[str, object]]) -> str:
    if not version:
        return "no device (a CPU build of torch)"
    if not devices:
        return f"no device (torch built with CUDA {version})"
    listed = (f"{d['index']}: {d['name']}, {d['memory_gib']} GiB, capability {d['capability']}" for d in devices)
    return f"CUDA {version}; " + "; ".join(listed)
