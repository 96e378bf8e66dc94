"""A screenshot of a page (e.g. the retrieval page) in a headless Chromium, as a PNG.

    python -m evaluation.screenshot PAGE.html --out page.png [--width 1280 --height 900]

Needs Debian's chromium (apt-get install chromium), or CHROMIUM naming another Chrome binary.
"""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from errors import CommandParser, UserError, run_command

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser():
    """The path of a Chromium-like browser, or None."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def screenshot(page, out, width=1280, height=900, timeout=120):
    """Save a width x height PNG of the top of `page` (an HTML file) to `out`; `out`."""
    executable = browser()
    if executable is None:
        raise UserError("no chromium found to take the screenshot; install it: apt-get install chromium")
    if not os.path.isfile(page):
        raise UserError(f"no file {page}; give the HTML page to take a screenshot of")
    if width < 1 or height < 1:
        raise UserError(f"--width and --height must be at least 1, got {width} x {height}")
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # no state shared with (or left for) other runs
        command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                   f"--screenshot={out}", f"--window-size={width},{height}", Path(page).resolve().as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired:
            raise UserError(f"{executable} took more than {timeout} s to draw {page}; try a smaller page") from None
    if result.returncode != 0 or not os.path.isfile(out):
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{executable} could not take the screenshot (exit {result.returncode}: {last}); "
                        "check that chromium runs: chromium --headless --no-sandbox --version")
    return out


def run(opt):
    path = screenshot(opt.page, opt.out, opt.width, opt.height)
    print(f"screenshot of {opt.page} written to {path}")
    return path


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.screenshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="the HTML file")
    parser.add_argument("--out", default="screenshot.png", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280, help="window width, pixels")
    parser.add_argument("--height", type=int, default=900, help="window height, pixels")
    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
