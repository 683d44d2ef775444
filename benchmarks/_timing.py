"""Shared helpers of the normswap benchmarks: interleaved timing, ratios, verdicts, output.

Every comparison is measured in one process and one run: the cases are timed in turn,
A, B, C, A, B, C, ... (`interleave`), so a slow patch of a shared machine hits every case
alike, and each case is summarised by its median. A ratio is reported two ways: the ratio
of the medians, and the median of the per-round ratios (B_i / A_i of the same round); the
spread of the per-round ratios (25th-75th percentile) says how much to trust it.
"""

import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time


def import_keras_quietly():
    """Import normswap and keras with TensorFlow's native start-up lines kept off stderr
    (normswap's own `_quiet.py`, asked for with NORMSWAP_QUIET=1); returns keras."""
    os.environ["NORMSWAP_QUIET"] = "1"
    import normswap  # noqa: F401 - imports keras quietly, touching the device once

    return sys.modules["keras"]


def interleave(cases, rounds, *, warmup=1, inner=1, between=None, progress=None):
    """Time every case `rounds` times, interleaved; return {name: [seconds per call, ...]}.

    Args:
        cases: {name: callable}, called without arguments, in this order within a round.
        rounds: how many recorded samples per case.
        warmup: untimed rounds first (graph tracing, lazy imports, caches).
        inner: calls per sample; a sample is their total time divided by `inner`.
        between: called (untimed) before every sample, e.g. `gc.collect`.
        progress: called as progress(round_index, rounds) after each recorded round.
    """
    samples = {name: [] for name in cases}
    for index in range(warmup + rounds):
        for name, function in cases.items():
            if between is not None:
                between()
            start = time.perf_counter()
            for _ in range(inner):
                function()
            elapsed = (time.perf_counter() - start) / inner
            if index >= warmup:
                samples[name].append(elapsed)
        if progress is not None and index >= warmup:
            progress(index - warmup + 1, rounds)
    return samples


def collect_garbage():
    gc.collect()


@contextlib.contextmanager
def frozen_heap():
    """Collect once, then move every live object out of the collector's sight (gc.freeze).

    With TensorFlow and a few models loaded a full `gc.collect()` takes about a second on
    a busy 2-core machine; a collection triggered inside a timed sample would land on
    whichever case happens to allocate then. Frozen, the collector only scans what the
    timed code allocates itself.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def quantile(values, q):
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def median(values):
    return statistics.median(values)


def ratio(samples, baseline):
    """B against A: {"ratio": median(B)/median(A), "paired": median(B_i/A_i), "q25", "q75"}."""
    paired = [b / a for a, b in zip(baseline, samples, strict=True)]
    return {
        "ratio": median(samples) / median(baseline),
        "paired": median(paired),
        "q25": quantile(paired, 0.25),
        "q75": quantile(paired, 0.75),
    }


def verdict(ratio_value, goal):
    """("met" | "missed", text) for a measured ratio against a goal `ratio ≤ goal`."""
    if ratio_value <= goal:
        return "met", f"met ({ratio_value:.2f}× ≤ {goal:g}×)"
    over = (ratio_value / goal - 1.0) * 100.0
    return "missed", f"MISSED by {over:.0f} % ({ratio_value:.2f}× > {goal:g}×)"


def verdict_markup(ok, text):
    return f"[green]{text}[/green]" if ok == "met" else f"[bold red]{text}[/bold red]"


def fmt_seconds(seconds):
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_ratio(r):
    return f"{r['ratio']:.2f}×"


def fmt_spread(r):
    return f"{r['paired']:.2f}× [{r['q25']:.2f}–{r['q75']:.2f}]"


def environment():
    """What the numbers were measured on (printed and written to the JSON)."""
    import keras

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["devices"] = [d.device_type + ":" + d.name.rsplit(":", 1)[-1]
                           for d in tf.config.list_logical_devices()]
    elif info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    elif info["backend"] == "torch":
        import torch

        info["torch"] = torch.__version__
        info["devices"] = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    info["dtype_policy"] = keras.config.dtype_policy().name
    return info


def print_environment(console, info):
    load = info.get("load_average_at_start")
    load_text = ", ".join(f"{x:.2f}" for x in load) if load else "n/a"
    backend_version = info.get("tensorflow") or info.get("jax") or info.get("torch") or ""
    console.print(
        f"[dim]{info['platform']} · Python {info['python']} · {info['cpus_usable']} usable CPU(s) "
        f"· load average {load_text} · keras {info['keras']} ({info['backend']} "
        f"{backend_version}) · devices {', '.join(info.get('devices', [])) or 'n/a'} "
        f"· dtype policy {info.get('dtype_policy')}[/dim]")


def load_average():
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def write_json(path, payload):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=_jsonable)
        f.write("\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)
