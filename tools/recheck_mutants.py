"""Run mutmut's mutants of one module in fresh processes, without forking.

mutmut runs each mutant's tests in a child forked from a process that has imported
TensorFlow; some of those children hang (TensorFlow's thread pools do not survive a fork)
and mutmut records them as timeouts, or the whole run stalls. This script uses what
`mutmut run` prepared (the mutated copy in mutants/ and the map from each function to the
tests that call it) and runs each mutant's tests in a new Python process, selecting the
mutant the way mutmut does (the MUTANT_UNDER_TEST environment variable):

    python tools/recheck_mutants.py normswap.carry                 # mutants not yet run
    python tools/recheck_mutants.py --status survived normswap.carry
    python tools/recheck_mutants.py --status all --jobs 2 normswap.verify

It prints killed, survived or timeout per mutant and records each outcome where
`mutmut results` and `mutmut browse` read it. The tests are copied into mutants/ first, so
tests written since `mutmut run` count; name the ones its map cannot know with `--also`:

    python tools/recheck_mutants.py --status survived --also tests/test_verify.py normswap.verify

Run it from the repository root after `mutmut run` has generated the mutants (interrupt
that run once it starts testing if it stalls); it changes nothing outside mutants/.
"""

import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
KILLED, SURVIVED, NO_TESTS, TIMEOUT = 1, 0, 5, -24  # mutmut's exit-code conventions
PYTEST_USAGE_ERROR = 4  # e.g. a test in mutmut's map that no longer exists
NO_TESTS_FOUND = 33  # mutmut: no test calls the mutated function
STATUS_OF_EXIT_CODE = {None: "not checked", KILLED: "killed", SURVIVED: "survived",
                       NO_TESTS: "no tests", NO_TESTS_FOUND: "no tests", TIMEOUT: "timeout"}


def meta_path(module):
    return MUTANTS / (module.replace(".", "/") + ".py.meta")


def tests_by_function():
    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    return stats["tests_by_mangled_function_name"]


def function_of(mutant):
    return mutant.rsplit("__mutmut_", 1)[0]


def run_mutant(mutant, tests, timeout):
    """The mutmut exit code of `mutant` against `tests` (pytest node ids, run in order)."""
    if not tests:
        return NO_TESTS
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-p", "tests.mutmut_plugin", *tests]
    environment = dict(os.environ, MUTANT_UNDER_TEST=mutant,
                       TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS="1",
                       TF_NUM_INTEROP_THREADS="1")
    try:
        run = subprocess.run(command, cwd=MUTANTS, env=environment, capture_output=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return TIMEOUT
    if run.returncode == PYTEST_USAGE_ERROR:  # not a kill: the tests never ran
        raise SystemExit(f"pytest could not run the tests of {mutant} (run `mutmut run` "
                         f"again to refresh its test map):\n{run.stderr.decode()[-2000:]}")
    if run.returncode == NO_TESTS:
        return NO_TESTS
    return KILLED if run.returncode else SURVIVED


def tests_for(mutant, tests_by_name, also):
    """The `--also` tests first (the likeliest to kill a survivor), then mutmut's."""
    return list(also) + sorted(set(tests_by_name.get(function_of(mutant), [])) - set(also))


def selected(exit_codes, status):
    return [mutant for mutant, code in exit_codes.items()
            if status == "all" or STATUS_OF_EXIT_CODE.get(code, "killed") == status]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="e.g. normswap.carry")
    parser.add_argument("--status", default="not checked",
                        help="which mutants to run: 'not checked' (default), 'survived', "
                             "'timeout', 'killed' or 'all'")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant")
    parser.add_argument("--function", help="only the mutants of this function (e.g. compare)")
    parser.add_argument("--also", action="append", default=[], metavar="TEST",
                        help="a test (file or node id) to run for every mutant as well; repeatable")
    args = parser.parse_args(argv)

    path = meta_path(args.module)
    if not path.exists():
        sys.exit(f"no mutants for {args.module}: run `mutmut run` first ({path} is missing)")
    shutil.copytree(ROOT / "tests", MUTANTS / "tests", dirs_exist_ok=True)
    meta = json.loads(path.read_text())
    tests = tests_by_function()
    mutants = [mutant for mutant in selected(meta["exit_code_by_key"], args.status)
               if args.function is None or function_of(mutant).endswith("_" + args.function)]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_mutant, mutant, tests_for(mutant, tests, args.also),
                               args.timeout): mutant for mutant in mutants}
        for future in concurrent.futures.as_completed(futures):
            mutant, code = futures[future], future.result()
            meta["exit_code_by_key"][mutant] = code
            path.write_text(json.dumps(meta, indent=4))
            print(f"{STATUS_OF_EXIT_CODE[code]:9s} {mutant}", flush=True)
    counts = collections.Counter(STATUS_OF_EXIT_CODE[meta["exit_code_by_key"][mutant]]
                                 for mutant in mutants)
    summary = ", ".join(f"{count} {name}" for name, count in counts.items()) or "none"
    print(f"{args.module}: {summary} of {len(mutants)} mutants run")


if __name__ == "__main__":
    main()
