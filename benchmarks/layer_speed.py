"""How much a normswap layer costs in a small ResNet, against the same net with BatchNormalization.

    python benchmarks/layer_speed.py            # full run (a few minutes)
    python benchmarks/layer_speed.py --quick    # smoke run, < 1 minute (default compile only)
    python benchmarks/layer_speed.py --json layers.json

One CIFAR-sized ResNet (32×32×3 input, stages of 16/32/64 channels, basic residual blocks,
global average pooling, 10 classes, batch 32) is built once per normalization, with
`make_norm()` everywhere a BatchNormalization would be (after every conv, before the ReLU
or the residual add); the ReLUs stay where they are, so the nets differ only in the
normalization layer. The "WS-conv + BN" net keeps BatchNormalization and swaps every Conv2D
for normswap's WSConv2D; its baseline is the plain Conv2D + BN net (the BN net itself).

For every net, interleaved (net 1, net 2, ..., net 1, ...), median over rounds:
  train step   model.train_on_batch(x, y)    (SGD with momentum, sparse cross-entropy)
  inference    model.predict_on_batch(x)
each after warm-up, with the default compile (on a CPU-only TensorFlow: no XLA) and with
jit_compile=True. Ratios are against the BN net measured in the same run (and against
GroupNormalization for the GroupNorm-like EvoNorm and FRN).

`--precision mixed_float16|mixed_bfloat16` builds every net under that Keras dtype policy
(float32 by default); the device is the backend's (a GPU when one is visible), and the
header line names it.

Goals (CPU): FRN, BatchRenorm ≤ 1.2× BN; EvoNorm, GroupNorm ≤ 1.5×; SwitchNorm,
BatchLayerNorm ≤ 1.8×; WS-conv ≤ 1.15× the plain-conv net. A goal is met when every
measured ratio for that layer (train and inference, both compile modes) is within it.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing  # noqa: E402

GROUPS = 8  # GroupNormalization / EvoNorm groups: divides 16, 32 and 64 channels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short smoke run (1 block per stage, few rounds, < 1 minute)")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    parser.add_argument("--blocks", type=int, default=None,
                        help="residual blocks per stage (default 2, 1 with --quick)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="recorded rounds (default 15, 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed sample (default 3, 1 with --quick)")
    parser.add_argument("--modes", default=None,
                        help="compile modes, comma-separated: default (jit_compile='auto') "
                             "and/or jit (jit_compile=True); default: both, only 'default' "
                             "with --quick (XLA compiles of 8 nets alone take over a minute)")
    parser.add_argument("--per-layer", action=argparse.BooleanOptionalAction, default=None,
                        help="also time each normalization layer alone on the first stage's "
                             "activations, with its TensorFlow graph size (default: on, off "
                             "with --quick)")
    parser.add_argument("--only", default=None,
                        help="comma-separated net names to run (BN is always included)")
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="Keras dtype policy of every net (default float32); the device "
                             "is the backend's choice (a GPU when one is visible)")
    args = parser.parse_args(argv)
    if args.blocks is None:
        args.blocks = 1 if args.quick else 2
    if args.rounds is None:
        args.rounds = 2 if args.quick else 15
    if args.per_layer is None:
        args.per_layer = not args.quick
    if args.steps is None:
        args.steps = 1 if args.quick else 3
    if args.modes is None:
        args.modes = "default" if args.quick else "default,jit"
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {"default", "jit"}
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; use default and/or jit")
    return args


def variants():
    """name -> (make_norm, conv class, goal vs BN, compare with GroupNorm too)."""
    import keras

    import normswap.layers as nl

    return {
        "BN": (lambda: keras.layers.BatchNormalization(), keras.layers.Conv2D, None, False),
        "GroupNorm": (lambda: keras.layers.GroupNormalization(groups=GROUPS),
                      keras.layers.Conv2D, 1.5, False),
        "FRN": (lambda: nl.FilterResponseNormalization(use_tlu=True),
                keras.layers.Conv2D, 1.2, True),
        "BatchRenorm": (lambda: nl.BatchRenormalization(), keras.layers.Conv2D, 1.2, False),
        "SwitchNorm": (lambda: nl.SwitchNormalization(), keras.layers.Conv2D, 1.8, False),
        "BatchLayerNorm": (lambda: nl.BatchLayerNormalization(), keras.layers.Conv2D, 1.8,
                           False),
        "EvoNormS0": (lambda: nl.EvoNormS0(groups=GROUPS), keras.layers.Conv2D, 1.5, True),
        "WS-conv + BN": (lambda: keras.layers.BatchNormalization(), nl.WSConv2D, 1.15, False),
    }


def small_resnet(make_norm, conv, blocks, name):
    """CIFAR-style ResNet: stem, 3 stages (16/32/64 ch, stride 1/2/2) of basic blocks, head."""
    import keras
    from keras import layers

    def conv_norm(x, filters, kernel, stride):
        x = conv(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        return make_norm()(x)

    inputs = keras.Input((32, 32, 3))
    x = layers.ReLU()(conv_norm(inputs, 16, 3, 1))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.ReLU()(conv_norm(x, filters, 3, stride))
            y = conv_norm(y, filters, 3, 1)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = conv_norm(shortcut, filters, 1, stride)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name=name)


def build_nets(args, mode, console):
    import keras
    import numpy as np

    selected = variants()
    if args.only:
        wanted = {"BN"} | {n.strip() for n in args.only.split(",")}
        unknown = wanted - set(selected)
        if unknown:
            raise SystemExit(f"unknown net(s) {sorted(unknown)}; choose from {list(selected)}")
        selected = {n: v for n, v in selected.items() if n in wanted}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,)).astype("int32")
    nets = {}
    for name, (make_norm, conv, _, _) in selected.items():
        keras.utils.set_random_seed(0)
        model = small_resnet(make_norm, conv, args.blocks, name.replace(" ", "").replace("+", "_"))
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True if mode == "jit" else "auto")
        start = time.perf_counter()
        for _ in range(2):  # trace / compile, then one more step
            model.train_on_batch(x, y)
            model.predict_on_batch(x)
        console.print(f"  {mode:7s} {name:15s} built, compiled and warmed up in "
                      f"{time.perf_counter() - start:.1f} s (jit_compile resolved to "
                      f"{model.jit_compile})", style="dim")
        nets[name] = model
    return nets, x, y


def measure(args, mode, console):
    nets, x, y = build_nets(args, mode, console)
    cases = {}
    for name, model in nets.items():
        cases[(name, "train")] = lambda m=model: m.train_on_batch(x, y)
        cases[(name, "infer")] = lambda m=model: m.predict_on_batch(x)
    console.print(f"  {mode}: {args.rounds} interleaved rounds of {args.steps} step(s) per net "
                  f"and kind ...")
    with _timing.frozen_heap():
        samples = _timing.interleave(
            cases, args.rounds, warmup=1, inner=args.steps,
            progress=lambda i, n: console.print(f"    round {i}/{n}", style="dim")
            if i in (1, n) or i % 5 == 0 else None)
    resolved = {name: bool(model.jit_compile) for name, model in nets.items()}
    params = {name: model.count_params() for name, model in nets.items()}
    return {"samples": {f"{n}|{kind}": v for (n, kind), v in samples.items()},
            "jit_compile": resolved, "params": params}


PER_LAYER_SHAPE = (32, 32, 32, 16)  # batch 32, the first stage's 32×32×16 activations


def per_layer(args, console):
    """Each normalization alone: tf.function forward (inference) and forward + backward
    (training) on one activation tensor, default and XLA, with the traced graph's op count.

    The graph size is what the default (non-XLA) TensorFlow executor pays for: every op is
    a separate kernel launch and, for elementwise ops, a full pass over the activations.
    TensorFlow backend only.
    """
    import keras
    import numpy as np

    if keras.backend.backend() != "tensorflow":
        console.print("[yellow]per-layer timing needs the TensorFlow backend; skipped[/yellow]")
        return None
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).standard_normal(PER_LAYER_SHAPE).astype("float32"))
    norms = {name: make for name, (make, conv, _, _) in variants().items()
             if conv is keras.layers.Conv2D}
    results = {}
    for mode in args.modes:
        jit = mode == "jit"
        cases, graph_ops = {}, {}
        for name, make in norms.items():
            layer = make()
            layer(x)

            def infer(t, layer=layer):
                return layer(t, training=False)

            def train(t, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(t)
                    y = layer(t, training=True)
                    loss = tf.reduce_sum(y * y)
                return tape.gradient(loss, [t] + layer.trainable_variables)

            infer_fn = tf.function(infer, jit_compile=jit)
            train_fn = tf.function(train, jit_compile=jit)
            for fn in (infer_fn, train_fn):
                fn(x)
            graph_ops[name] = {
                "infer": len(infer_fn.get_concrete_function(x).graph.get_operations()),
                "train": len(train_fn.get_concrete_function(x).graph.get_operations()),
            }
            cases[f"{name}|infer"] = lambda f=infer_fn: f(x)[0].numpy()
            cases[f"{name}|train"] = lambda f=train_fn: f(x)[0].numpy()
        with _timing.frozen_heap():
            samples = _timing.interleave(cases, 15, warmup=1, inner=5)
        results[mode] = {"samples": samples, "graph_ops": graph_ops}
    return results


def report_per_layer(results, console):
    from rich.table import Table

    for mode, result in results.items():
        samples, graph_ops = result["samples"], result["graph_ops"]
        table = Table(title=f"Each layer alone on a {PER_LAYER_SHAPE} tensor, "
                            f"{'default tf.function' if mode == 'default' else 'XLA'} "
                            "(median of 15 rounds × 5 calls)")
        table.add_column("layer")
        for kind in ("infer", "train"):
            label = "forward (inference)" if kind == "infer" else "forward + backward"
            table.add_column(label, justify="right")
            table.add_column("× BN", justify="right")
            table.add_column("graph ops", justify="right")
        for name in graph_ops:
            cells = [name]
            for kind in ("infer", "train"):
                r = _timing.ratio(samples[f"{name}|{kind}"], samples[f"BN|{kind}"])
                cells += [_timing.fmt_seconds(_timing.median(samples[f"{name}|{kind}"])),
                          f"{r['ratio']:.2f}×", str(graph_ops[name][kind])]
            table.add_row(*cells)
        console.print(table)


def analyse(results):
    """Ratios per mode, kind and net; returns rows and, per net, its worst ratio vs BN."""
    rows = []
    for mode, result in results.items():
        samples = result["samples"]
        for kind in ("train", "infer"):
            bn = samples[f"BN|{kind}"]
            gn = samples.get(f"GroupNorm|{kind}")
            for name in dict.fromkeys(k.split("|")[0] for k in samples):
                values = samples[f"{name}|{kind}"]
                rows.append({
                    "mode": mode, "kind": kind, "net": name,
                    "median": _timing.median(values), "min": min(values),
                    "vs_bn": _timing.ratio(values, bn),
                    "vs_gn": _timing.ratio(values, gn) if gn is not None else None,
                })
    return rows


def report(args, results, console):
    from rich.table import Table

    rows = analyse(results)
    specs = variants()
    for mode in results:
        resolved = set(results[mode]["jit_compile"].values())
        xla = "on" if resolved == {True} else "off" if resolved == {False} else "mixed"
        title = (f"{'default compile' if mode == 'default' else 'jit_compile=True'} "
                 f"(XLA {xla}) "
                 f"— batch {args.batch}, {args.blocks} block(s)/stage, median of "
                 f"{args.rounds} rounds × {args.steps} step(s)")
        table = Table(title=title)
        table.add_column("net")
        table.add_column("params", justify="right")
        for kind in ("train", "infer"):
            label = "train step" if kind == "train" else "inference"
            table.add_column(label, justify="right")
            table.add_column("× BN [IQR]", justify="right")
            table.add_column("× GN", justify="right")
        table.add_column("goal", justify="right")
        for name in results[mode]["params"]:
            cells = [name, f"{results[mode]['params'][name]:,}"]
            for kind in ("train", "infer"):
                row = next(r for r in rows if r["mode"] == mode and r["kind"] == kind
                           and r["net"] == name)
                goal = specs[name][2]
                ratio_text = f"{row['vs_bn']['ratio']:.2f}× [{row['vs_bn']['q25']:.2f}–" \
                             f"{row['vs_bn']['q75']:.2f}]"
                if goal is not None and row["vs_bn"]["ratio"] > goal:
                    ratio_text = f"[bold red]{ratio_text}[/bold red]"
                elif goal is not None:
                    ratio_text = f"[green]{ratio_text}[/green]"
                gn_text = (f"{row['vs_gn']['ratio']:.2f}×"
                           if specs[name][3] and row["vs_gn"] is not None else "")
                cells += [_timing.fmt_seconds(row["median"]), ratio_text, gn_text]
            goal = specs[name][2]
            cells.append("baseline" if goal is None else f"≤ {goal:g}×")
            table.add_row(*cells)
        console.print(table)
    return rows


def verdicts(rows, console):
    specs = variants()
    out = []
    console.rule("Verdicts (every ratio vs BN: train and inference, each compile mode)")
    for name, (_, _, goal, _) in specs.items():
        if goal is None:
            continue
        mine = [r for r in rows if r["net"] == name]
        if not mine:
            continue
        worst = max(mine, key=lambda r: r["vs_bn"]["ratio"])
        ok, text = _timing.verdict(worst["vs_bn"]["ratio"], goal)
        misses = [f"{r['kind']}/{r['mode']} {r['vs_bn']['ratio']:.2f}×" for r in mine
                  if r["vs_bn"]["ratio"] > goal]
        baseline = "the plain Conv2D + BN net" if name.startswith("WS") else "BN"
        line = f"{name} ≤ {goal:g}× {baseline}: "
        if ok == "met":
            line += _timing.verdict_markup(ok, f"met (worst {worst['vs_bn']['ratio']:.2f}×, "
                                               f"{worst['kind']}/{worst['mode']})")
        else:
            line += _timing.verdict_markup(ok, f"{text.split(' (')[0]} (worst "
                                               f"{worst['kind']}/{worst['mode']}); "
                                               f"misses: {', '.join(misses)}")
        console.print(line)
        out.append({"net": name, "limit": goal, "worst_ratio": worst["vs_bn"]["ratio"],
                    "worst_at": f"{worst['kind']}/{worst['mode']}", "result": ok,
                    "misses": misses})
    return out


GPU_XLA_TRAIN_GOAL = 1.3


def gpu_verdicts(rows, info, console):
    """On a GPU: every bundled layer's XLA train step ≤ 1.3× BN's (no goal on a CPU)."""
    if not any("GPU" in d.upper() or "CUDA" in d.upper() for d in info.get("devices", [])):
        return []
    console.rule(f"GPU verdicts (train step with XLA ≤ {GPU_XLA_TRAIN_GOAL}× BN)")
    out = []
    for row in rows:
        if row["mode"] != "jit" or row["kind"] != "train" or row["net"] == "BN":
            continue
        ok, text = _timing.verdict(row["vs_bn"]["ratio"], GPU_XLA_TRAIN_GOAL)
        console.print(f"{row['net']}: " + _timing.verdict_markup(ok, text))
        out.append({"net": row["net"], "limit": GPU_XLA_TRAIN_GOAL,
                    "ratio": row["vs_bn"]["ratio"], "result": ok})
    return out


def main(argv=None):
    args = parse_args(argv)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140)
    started = time.perf_counter()
    keras = _timing.import_keras_quietly()
    import normswap  # noqa: F401  (registers the layers)

    keras.config.set_dtype_policy(args.precision)

    if keras.backend.backend() == "tensorflow":  # one tf.function per net: not a retracing bug
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    info = _timing.environment()
    _timing.print_environment(console, info)
    results = {}
    for mode in args.modes:
        count = len(variants()) if not args.only else len({"BN", *args.only.split(",")})
        console.print(f"Compile mode '{mode}': building {count} nets ...")
        results[mode] = measure(args, mode, console)
        keras.backend.clear_session()
    rows = report(args, results, console)
    layer_results = None
    if args.per_layer:
        console.print("Each normalization layer alone ...")
        layer_results = per_layer(args, console)
        if layer_results:
            report_per_layer(layer_results, console)
    payload = {"benchmark": "layer_speed", "environment": info, "args": vars(args),
               "results": results, "rows": rows, "per_layer": layer_results,
               "verdicts": verdicts(rows, console),
               "gpu_verdicts": gpu_verdicts(rows, info, console)}
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
