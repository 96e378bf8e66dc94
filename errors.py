"""How a command tells its user about a mistake or an interruption: one line, no traceback.

Every command runs its body through run_command, which prints a UserError as one line and exits
with status 2, and Ctrl-C or SIGTERM as one line with exit status 130 or 143. Its flags go
through a CommandParser, whose errors are one line too and whose --help shows every default.
The message names the problem and the fix.
"""
import argparse
import contextlib
import re
import signal
import sys
import threading


class UserError(Exception):
    pass


class SettingError(UserError, ValueError):
    """A setting that cannot work, or a combination of settings. The message names settings as a
    run's record (config.json) keys them, which are also the command line's flags; `names` maps each
    such word of the message to its key, so that a command can name them its own way (`naming`)."""

    def __init__(self, message, names=()):
        super().__init__(message)
        self.names = dict(names) if isinstance(names, dict) else {name: name for name in names}

    def naming(self, render):
        """The message with each setting's word replaced by render(its key), e.g. "--" + key."""
        if not self.names:
            return str(self)
        pattern = r"(?<![\w-])(" + "|".join(map(re.escape, sorted(self.names, key=len, reverse=True))) + r")\b"
        return re.sub(pattern, lambda match: render(self.names[match.group(1)]), str(self))


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM stopped the command; the message says what was kept."""

    def __init__(self, signal_number, message=""):
        super().__init__(message)
        self.signal_number = signal_number


def first_line(error, limit=200):
    """The first line of an exception's message (its type when it has none), at most `limit`
    characters: what a one-line error quotes of a library's longer message."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def one_line(error):
    """The user-facing line of an error, also when a DataLoader worker re-raised it with the
    worker's traceback folded into the message."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("UserError: ", 1)[-1]


def counted(number, noun, plural):
    """`number` with its noun, singular for 1: "1 class", "2 classes"."""
    return f"{number} {noun if number == 1 else plural}"


def _raise_interrupted(signal_number, frame):
    raise Interrupted(signal_number)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait for the end of the block (a file being written is finished or
    removed first), then take effect as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    completed = False
    try:
        yield
        completed = True
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received and completed:
            signal.raise_signal(received[0])


def run_command(function, *args):
    """Call a command's body: a UserError becomes one line on stderr and exit status 2; Ctrl-C and
    SIGTERM one line and exit status 128 + the signal's number (130, 143)."""
    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if main_thread else None
    try:
        return function(*args)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as error:
        number = getattr(error, "signal_number", signal.SIGINT)
        print(f"stopped by {signal.Signals(number).name}" + (f": {error}" if str(error) else ""), file=sys.stderr)
        sys.exit(128 + number)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to a flag's help unless the help already says its default in words
    ("default: the first GPU ..."), which "(default: None)" would contradict."""

    def _get_help_string(self, action):
        if re.search(r"\bdefault\b", action.help or "", re.IGNORECASE):
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ("error: ...; see <command> --help") with exit
    status 2, and whose --help shows the default of every flag."""

    def __init__(self, *args, command=None, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        if command and not args:
            kwargs.setdefault("prog", command)  # `python -m datasets.verify`, not `verify.py`
        super().__init__(*args, **kwargs)
        self.command = command or f"python {self.prog}"

    def format_help(self):
        for action in self._actions:
            if action.help is None:
                action.help = "(default: %(default)s)"  # the formatter shows no default for a flag without help
        return super().format_help()

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.command} --help\n")
