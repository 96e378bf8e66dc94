"""main.py run from a test as `python main.py ARGS` runs it, but in the test's process (runpy), so
that a run costs no new interpreter and can be monkeypatched. Nothing imports main.py."""
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
