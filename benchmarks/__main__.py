"""`python -m benchmarks [--quick]`: every benchmark in one command, one report.

Runs, in turn, conversion speed (convert_speed.py), layer speed (layer_speed.py),
calibration accuracy and cost (calibration.py), block-wise reconstruction
(reconstruction.py) and the small-batch study (small_batch.py, always --quick here: its
full run takes its own 20 minutes), each in its own process, and writes everything they
print to benchmarks/results/latest.md with the machine it ran on. `--quick` passes
--quick to every one (a few minutes in all); `--only NAME[,NAME]` picks some.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _timing  # noqa: E402

BENCHMARKS = {
    "convert_speed": [],
    "layer_speed": [],
    "calibration": [],
    "reconstruction": ["--out", str(HERE / "results" / "reconstruction.md")],
    "small_batch": ["--quick"],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="--quick for every benchmark")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    _timing.import_keras_quietly()
    sections = [f"# normswap benchmarks, {time.strftime('%Y-%m-%d %H:%M')}\n",
                "Machine: " + repr(_timing.environment()) + "\n"]
    failed = []
    for name in names:
        extra = list(BENCHMARKS[name])
        if args.quick and "--quick" not in extra:
            extra.append("--quick")
        command = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        minutes = (time.perf_counter() - began) / 60
        sections.append(f"## {name} ({minutes:.1f} min{', FAILED' if result.returncode else ''})"
                        f"\n\n`python benchmarks/{name}.py {' '.join(extra)}`\n\n```\n"
                        f"{result.stdout.strip()}\n```\n")
        if result.returncode:
            failed.append(name)
            sections.append(f"stderr:\n```\n{result.stderr.strip()[-3000:]}\n```\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
