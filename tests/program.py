"""main.py run from a test as `python main.py ARGS` runs it, but in the test's process (runpy), so
that a run costs no new interpreter and can be monkeypatched. Nothing imports main.py.

For the tests that start processes: their environment (one CPU thread each: tests run beside other
work on shared cores, where two threads on two busy cores run many times slower than one), and
PATIENCE, the limit of every wait, which only a hung process reaches (tests wait on conditions,
never on how long something took on an idle machine)."""
import os
import runpy
import sys

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "main.py")


def run_main(argv):
    """main.py with the arguments `argv`; its exit status (0 when it returns)."""
    saved = sys.argv
    sys.argv = [MAIN, *map(str, argv)]
    try:
        runpy.run_path(MAIN, run_name="__main__")
    except SystemExit as stop:
        return stop.code
    finally:
        sys.argv = saved
    return 0


def run_command(main, argv, capsys):
    """A command's main(ARGV) in this process: (exit status, stdout, stderr), 0 when it returns."""
    try:
        status = main([str(flag) for flag in argv])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status or 0, captured.out, captured.err


def assert_one_line_error(status, stderr, *fragments):
    """Exit status 2 and one `error:` line holding each of `fragments`, no traceback."""
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


PATIENCE = 3600  # seconds


def environment(**extra):
    """os.environ for a test's subprocess: one CPU thread (OMP_NUM_THREADS=1), and `extra`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}
