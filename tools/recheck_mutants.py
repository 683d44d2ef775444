"""Re-run mutmut's timed-out mutants one by one in a fresh process, without forking.

mutmut runs each mutant's tests in a child forked from a process that has imported
TensorFlow; some of those children hang (TensorFlow's thread pools do not survive a fork)
and mutmut records them as timeouts, which says nothing about the tests. This script
applies each timed-out mutant of MODULE to a scratch copy of the project, runs TEST files
there with `pytest -x` in a new Python process, and prints killed or survived per mutant:

    python tools/recheck_mutants.py normswap.layers._groups tests/layers/test_groups.py

`--status survived` re-checks the survivors instead (after tests were added, without a
new mutmut run). Run it from the repository root after `mutmut run`; it changes nothing
in the repository.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("normswap", "tests", "setup.cfg", "pyproject.toml")


def mutmut(*args):
    command = [str(Path(sys.executable).parent / "mutmut"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def with_status(module, status):
    lines = mutmut("results", "--all", "true").splitlines()
    return [line.split(":")[0].strip() for line in lines
            if line.strip().startswith(module + ".") and line.strip().endswith(": " + status)]


def apply_mutant(diff, scratch):
    """Apply a `mutmut show` diff. Its lines are dedented for methods, so the removed block
    is found by its lines' text and the added lines get the indentation found there."""
    lines = diff.splitlines()
    path = scratch / next(line[4:] for line in lines if line.startswith("--- "))
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    source = path.read_text().splitlines()
    stripped = [line.strip() for line in source]
    wanted = [line.strip() for line in removed]
    start = next(i for i in range(len(source))
                 if stripped[i:i + len(wanted)] == wanted and
                 all(source[i + k].endswith(removed[k]) for k in range(len(removed))))
    indent = source[start][:len(source[start]) - len(removed[0])]
    source[start:start + len(removed)] = [indent + line for line in added]
    path.write_text("\n".join(source) + "\n")


def recheck(name, tests, scratch):
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for item in COPIED:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, scratch / item)
        else:
            shutil.copy(source, scratch / item)
    apply_mutant(mutmut("show", name), scratch)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          *tests], cwd=scratch, capture_output=True, text=True)
    return "killed" if run.returncode else "survived"


def main(argv):
    status = "timeout"
    if argv[:1] == ["--status"]:
        status, argv = argv[1], argv[2:]
    if len(argv) < 2:
        sys.exit(__doc__)
    module, tests = argv[0], argv[1:]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="normswap-mutant-") as folder:
        for name in with_status(module, status):
            outcome = recheck(name, tests, Path(folder) / "project")
            outcomes.append(outcome)
            print(f"{outcome:8s} {name}", flush=True)
    print(f"{outcomes.count('killed')} killed, {outcomes.count('survived')} survived "
          f"of {len(outcomes)} mutants that were '{status}'")


if __name__ == "__main__":
    main(sys.argv[1:])
