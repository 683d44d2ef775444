"""How long a normswap conversion takes, against Keras loading and saving the same model.

    python benchmarks/convert_speed.py            # full run (a few minutes)
    python benchmarks/convert_speed.py --quick    # smoke run, < 1 minute
    python benchmarks/convert_speed.py --json convert.json

Part 1, in process: a ResNet50 (weights=None) saved as .keras, then, interleaved,
  (a) baseline  keras.models.load_model(file) + model.save(out)
  (b) normswap  normswap.saving.load_model(file) + normswap.convert(model, "frozenbn",
                output=out, force=True): verification included, the file written while
                the verification runs and renamed into place once it has passed
with normswap's time split into load / graph walk / plan / replace / rebuild /
verify ∥ save / other. Goal: (b) ≤ 1.3 × (a).

Part 2, subprocesses: the `normswap` command against `python -c "<keras load + save>"`,
each paying its own Python + TensorFlow start-up (goal ≤ 1.15×; skipped by --quick).

Part 3, linearity: normswap.plan(model, "groupnorm") on ResNet50, ResNet152 and
DenseNet201; the time per layer should be about constant (goal: largest / smallest
≤ 1.5).
"""

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing  # noqa: E402

CONVERT_GOAL = 1.3
CLI_GOAL = 1.15
LINEARITY_GOAL = 1.5
PHASES = ("load", "graph walk", "plan", "replace", "rebuild", "verify ∥ save", "other")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short smoke run (small input, few rounds, < 1 minute)")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    parser.add_argument("--input-size", type=int, default=None,
                        help="ResNet50 input height/width for part 1 "
                             "(default 224, 64 with --quick)")
    parser.add_argument("--target", default="frozenbn", help="conversion target (default frozenbn)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="recorded rounds of part 1 (default 7, 1 with --quick)")
    parser.add_argument("--cli-rounds", type=int, default=None,
                        help="rounds of the subprocess comparison (default 1; 0, the "
                             "default with --quick, skips it)")
    parser.add_argument("--plan-models", default=None,
                        help="comma-separated keras.applications names for part 3 "
                             "(default ResNet50,ResNet152,DenseNet201; "
                             "ResNet50,ResNet101 with --quick)")
    parser.add_argument("--plan-size", type=int, default=64,
                        help="input height/width of the part 3 models (default 64)")
    args = parser.parse_args(argv)
    if args.input_size is None:
        args.input_size = 64 if args.quick else 224
    if args.rounds is None:
        args.rounds = 1 if args.quick else 7
    if args.cli_rounds is None:
        args.cli_rounds = 0 if args.quick else 1
    if args.plan_models is None:
        args.plan_models = ("ResNet50,ResNet101" if args.quick
                            else "ResNet50,ResNet152,DenseNet201")
    args.plan_models = [name.strip() for name in args.plan_models.split(",") if name.strip()]
    return args


class PhaseTimer:
    """Wraps module-level functions so each call adds its duration to a named phase."""

    def __init__(self):
        self.totals = defaultdict(float)
        self._patched = []

    def wrap(self, module, attribute, phase):
        original = getattr(module, attribute, None)
        if not callable(original):
            return False
        totals = self.totals

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[phase] += time.perf_counter() - start

        setattr(module, attribute, timed)
        self._patched.append((module, attribute, original))
        return True

    def reset(self):
        self.totals.clear()

    def restore(self):
        for module, attribute, original in reversed(self._patched):
            setattr(module, attribute, original)
        self._patched.clear()


def instrument_normswap():
    """Time the pieces of normswap.convert from the inside (the names convert.py calls)."""
    convert_module = importlib.import_module("normswap.convert")
    plan_module = importlib.import_module("normswap.plan")
    saving_module = importlib.import_module("normswap.saving")
    timer = PhaseTimer()
    missing = []
    for module, attribute, phase in (
        (plan_module, "find_sites", "graph walk"),
        (convert_module, "make_plan", "plan+walk"),
        (convert_module, "_replace", "replace"),
        (convert_module, "rebuild", "rebuild"),
        (convert_module, "verify_models", "verify"),
        (saving_module, "save_verified", "verify ∥ save"),
    ):
        if not timer.wrap(module, attribute, phase):
            missing.append(f"{module.__name__}.{attribute}")
    return timer, missing


def part1(args, workdir, console):
    import keras

    import normswap
    from normswap import saving as nio

    size = args.input_size
    console.print(f"Building ResNet50(weights=None, input {size}×{size}×3) ...")
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    source = workdir / "resnet50.keras"
    model.save(source)
    info = {"layers": len(model.layers), "params": model.count_params(),
            "file_bytes": source.stat().st_size}
    del model

    timer, missing = instrument_normswap()
    phases_per_round = []

    keras_phases = []

    def keras_load_save():
        t0 = time.perf_counter()
        loaded = keras.models.load_model(source)
        t1 = time.perf_counter()
        loaded.save(workdir / "keras_out.keras")
        keras_phases.append({"load": t1 - t0, "save": time.perf_counter() - t1})

    def normswap_convert():
        timer.reset()
        t0 = time.perf_counter()
        loaded = nio.load_model(source)
        t1 = time.perf_counter()
        normswap.convert(loaded, args.target, output=workdir / "normswap_out.keras",
                         force=True)
        t2 = time.perf_counter()
        totals = dict(timer.totals)
        plan_and_walk = totals.get("plan+walk", 0.0)
        walk = totals.get("graph walk", 0.0)
        inside = plan_and_walk + sum(totals.get(k, 0.0)
                                     for k in ("replace", "rebuild", "verify ∥ save"))
        phases_per_round.append({
            "load": t1 - t0, "graph walk": walk, "plan": plan_and_walk - walk,
            "replace": totals.get("replace", 0.0), "rebuild": totals.get("rebuild", 0.0),
            "verify ∥ save": totals.get("verify ∥ save", 0.0), "other": (t2 - t1) - inside,
            "verify alone": totals.get("verify", 0.0),
        })

    def clear():
        keras.backend.clear_session()
        _timing.collect_garbage()

    console.print(f"Part 1: {args.rounds} interleaved rounds (+1 warm-up) of Keras load+save "
                  f"vs normswap load+convert({args.target!r})+save ...")
    try:
        samples = _timing.interleave(
            {"keras": keras_load_save, "normswap": normswap_convert}, args.rounds,
            warmup=1, between=clear,
            progress=lambda i, n: console.print(f"  round {i}/{n}", style="dim"))
    finally:
        timer.restore()
    return {"model": info, "input_size": size, "target": args.target, "samples": samples,
            "phases": phases_per_round[1:], "keras_phases": keras_phases[1:],  # no warm-up
            "uninstrumented": missing}


def report_part1(result, console):
    from rich.table import Table

    samples = result["samples"]
    keras_median = _timing.median(samples["keras"])
    normswap_median = _timing.median(samples["normswap"])
    r = _timing.ratio(samples["normswap"], samples["keras"])
    table = Table(title=f"Part 1 — ResNet50 {result['input_size']}² "
                        f"({result['model']['layers']} layers, "
                        f"{result['model']['params'] / 1e6:.1f} M params), "
                        f"target {result['target']!r}, {len(samples['keras'])} rounds")
    table.add_column("case")
    table.add_column("median", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("ratio vs Keras", justify="right")
    table.add_column("paired ratio [IQR]", justify="right")
    table.add_row("Keras load + save (baseline)", _timing.fmt_seconds(keras_median),
                  _timing.fmt_seconds(min(samples["keras"])),
                  _timing.fmt_seconds(max(samples["keras"])), "1.00×", "")
    table.add_row("normswap load + convert(output=)", _timing.fmt_seconds(normswap_median),
                  _timing.fmt_seconds(min(samples["normswap"])),
                  _timing.fmt_seconds(max(samples["normswap"])), _timing.fmt_ratio(r),
                  _timing.fmt_spread(r))
    console.print(table)

    medians = {}
    for phase in PHASES:
        values = [p[phase] for p in result["phases"]]
        medians[phase] = _timing.median(values) if values else float("nan")

    def medians_ratio_text(phase, keras_value):
        return f"{medians[phase] / keras_value:.2f}× Keras's {_timing.fmt_seconds(keras_value)}"

    breakdown = Table(title="normswap's time, by phase (median over rounds)")
    breakdown.add_column("phase")
    breakdown.add_column("median", justify="right")
    breakdown.add_column("share", justify="right")
    breakdown.add_column("× Keras load+save", justify="right")
    breakdown.add_column("what it is")
    keras_load = _timing.median([p["load"] for p in result["keras_phases"]])
    keras_save = _timing.median([p["save"] for p in result["keras_phases"]])
    verify_alone = _timing.median([p["verify alone"] for p in result["phases"]])
    meaning = {
        "load": f"normswap.saving.load_model ({medians_ratio_text('load', keras_load)})",
        "graph walk": "graph.find_sites: networkx graph of the calls",
        "plan": "make_plan minus the walk: per-site decisions",
        "replace": "convert._replace: targets build the new layers",
        "rebuild": "rewrite.rebuild: replay graph, clone, copy weights",
        "verify ∥ save": (f"saving.save_verified: the write and verify_models (both "
                          f"models on the probe, {_timing.fmt_seconds(verify_alone)} of it) "
                          f"side by side; Keras's save alone {_timing.fmt_seconds(keras_save)}"),
        "other": "rest of convert(): report, parameter counts",
    }
    total = sum(medians.values())
    for phase in PHASES:
        breakdown.add_row(phase, _timing.fmt_seconds(medians[phase]),
                          f"{100 * medians[phase] / total:.0f} %",
                          f"{medians[phase] / keras_median:.2f}×", meaning[phase])
    breakdown.add_row("[b]sum[/b]", _timing.fmt_seconds(total), "100 %",
                      f"{total / keras_median:.2f}×", "")
    console.print(breakdown)
    if result["uninstrumented"]:
        console.print(f"[yellow]not instrumented (renamed?): {', '.join(result['uninstrumented'])}"
                      "[/yellow]")
    overlap = medians["verify ∥ save"] / keras_save
    console.print(f"the write and the verification side by side take {overlap:.2f}× "
                  f"Keras's save alone; normswap's load is "
                  f"{medians['load'] / keras_load:.2f}× Keras's.")
    medians["verify alone"] = verify_alone
    return r, medians


CLI_KERAS_SNIPPET = ("import sys, keras; m = keras.models.load_model(sys.argv[1]); "
                     "m.save(sys.argv[2])")


def normswap_command():
    beside = Path(sys.executable).parent / "normswap"
    if beside.exists():
        return str(beside)
    found = shutil.which("normswap")
    if found is None:
        raise SystemExit("the `normswap` command is not installed (pip install -e .)")
    return found


def part2(args, workdir, console):
    source = workdir / "resnet50.keras"
    env = dict(os.environ)
    commands = {
        "keras": [sys.executable, "-c", CLI_KERAS_SNIPPET, str(source),
                  str(workdir / "cli_keras_out.keras")],
        "normswap": [normswap_command(), str(source), "--to", args.target, "-o",
                     str(workdir / "cli_normswap_out.keras"), "--force"],
    }
    if not args.quick:
        commands["import keras"] = [sys.executable, "-c", "import keras"]
        commands["import normswap.cli"] = [sys.executable, "-c", "import normswap.cli"]
    failures = {}

    def runner(name, command):
        def run():
            completed = subprocess.run(command, env=env, capture_output=True, text=True)
            if completed.returncode != 0:
                failures[name] = (completed.returncode, completed.stderr.strip()[-2000:])
        return run

    console.print(f"Part 2: {args.cli_rounds} round(s) of subprocesses: "
                  f"{', '.join(commands)} ...")
    samples = _timing.interleave({n: runner(n, c) for n, c in commands.items()},
                                 args.cli_rounds, warmup=0)
    return {"commands": commands, "samples": samples, "failures": failures}


def report_part2(result, console):
    from rich.table import Table

    samples = result["samples"]
    table = Table(title="Part 2 — one subprocess each (Python + TensorFlow start-up included)")
    table.add_column("command")
    table.add_column("median", justify="right")
    table.add_column("ratio vs keras subprocess", justify="right")
    labels = {
        "keras": "python -c 'keras load + save' (baseline)",
        "normswap": "normswap MODEL --to ... -o OUT --force",
        "import keras": "python -c 'import keras' (start-up only)",
        "import normswap.cli": "python -c 'import normswap.cli' (start-up only)",
    }
    r = _timing.ratio(samples["normswap"], samples["keras"])
    for name, values in samples.items():
        ratio = _timing.ratio(values, samples["keras"])
        table.add_row(labels.get(name, name), _timing.fmt_seconds(_timing.median(values)),
                      _timing.fmt_ratio(ratio))
    console.print(table)
    for name, (code, stderr) in result["failures"].items():
        console.print(f"[bold red]{name} exited with status {code}:[/bold red] {stderr}")
    return r


def part3(args, console):
    import keras

    import normswap

    models = {}
    for name in args.plan_models:
        console.print(f"Building {name}(weights=None, input {args.plan_size}²) ...")
        constructor = getattr(keras.applications, name)
        models[name] = constructor(weights=None,
                                   input_shape=(args.plan_size, args.plan_size, 3))
    inner = 10
    rounds = 7 if args.quick else 15
    console.print(f"Part 3: normswap.plan(model, 'groupnorm'), {rounds} interleaved rounds "
                  f"of {inner} calls ...")
    cases = {name: (lambda m=m: normswap.plan(m, "groupnorm")) for name, m in models.items()}
    samples = _timing.interleave(cases, rounds, warmup=1, inner=inner,
                                 between=_timing.collect_garbage)
    sizes = {}
    for name, model in models.items():
        layers = list(model._flatten_layers(include_self=False, recursive=True))
        sites = len(normswap.plan(model, "groupnorm").sites)
        sizes[name] = {"layers": len(layers), "bn_sites": sites}
    return {"samples": samples, "sizes": sizes, "inner": inner, "input_size": args.plan_size}


def report_part3(result, console):
    from rich.table import Table

    rounds = len(next(iter(result["samples"].values())))
    table = Table(title=f"Part 3 — normswap.plan(model, 'groupnorm'), input "
                        f"{result['input_size']}², median of {rounds} rounds × "
                        f"{result['inner']} calls")
    table.add_column("model")
    table.add_column("layers", justify="right")
    table.add_column("BN sites", justify="right")
    table.add_column("plan time", justify="right")
    table.add_column("per layer", justify="right")
    table.add_column("per layer vs first", justify="right")
    per_layer = {}
    for name, values in result["samples"].items():
        per_layer[name] = _timing.median(values) / result["sizes"][name]["layers"]
    first = next(iter(per_layer.values()))
    for name, values in result["samples"].items():
        size = result["sizes"][name]
        table.add_row(name, str(size["layers"]), str(size["bn_sites"]),
                      _timing.fmt_seconds(_timing.median(values)),
                      _timing.fmt_seconds(per_layer[name]), f"{per_layer[name] / first:.2f}×")
    console.print(table)
    return max(per_layer.values()) / min(per_layer.values()), per_layer


def main(argv=None):
    args = parse_args(argv)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)
    started = time.perf_counter()
    _timing.import_keras_quietly()
    import normswap  # noqa: F401

    info = _timing.environment()
    _timing.print_environment(console, info)
    payload = {"benchmark": "convert_speed", "environment": info, "args": vars(args)}
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="normswap-bench-") as tmp:
        workdir = Path(tmp)
        payload["part1"] = part1(args, workdir, console)
        r1, medians = report_part1(payload["part1"], console)
        payload["part1"]["phase_medians"] = medians
        payload["part1"]["ratio"] = r1
        verdicts.append((f"normswap load+convert({args.target})+save ≤ {CONVERT_GOAL}× "
                         f"Keras load+save (in process)", r1["ratio"], CONVERT_GOAL))
        if args.cli_rounds > 0:
            payload["part2"] = part2(args, workdir, console)
            r2 = report_part2(payload["part2"], console)
            payload["part2"]["ratio"] = r2
            verdicts.append((f"the normswap command ≤ {CLI_GOAL}× a python -c keras "
                             f"load+save (start-up included)", r2["ratio"], CLI_GOAL))
        else:
            r2 = None
            console.print("Part 2 (subprocesses) skipped; --cli-rounds 1 runs it.")
    payload["part3"] = part3(args, console)
    spread, per_layer = report_part3(payload["part3"], console)
    payload["part3"]["per_layer_seconds"] = per_layer
    payload["part3"]["per_layer_spread"] = spread
    verdicts.append((f"plan time per layer about constant (largest / smallest ≤ "
                     f"{LINEARITY_GOAL}×) over {', '.join(per_layer)}", spread, LINEARITY_GOAL))

    console.rule("Verdicts")
    payload["verdicts"] = []
    for text, value, goal in verdicts:
        ok, description = _timing.verdict(value, goal)
        console.print(f"{text}: " + _timing.verdict_markup(ok, description))
        payload["verdicts"].append({"goal": text, "value": value, "limit": goal, "result": ok})
    elapsed = time.perf_counter() - started
    console.print(f"[dim]total run time {elapsed:.0f} s; load average now "
                  f"{', '.join(f'{x:.2f}' for x in _timing.load_average())}[/dim]")
    payload["run_seconds"] = elapsed
    if args.json:
        _timing.write_json(args.json, payload)
        console.print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
