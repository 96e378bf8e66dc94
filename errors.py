"""The one exception type for mistakes a user can fix (bad flags, missing data, bad files).

Every command runs its body through run_command, which prints such an error as one line and
exits with status 2, without a traceback.
The message names the problem and the fix.
"""
import sys


class UserError(Exception):
    pass


def one_line(error):
    """The user-facing line of an error, also when a DataLoader worker re-raised it with the
    worker's traceback folded into the message."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("UserError: ", 1)[-1]


def run_command(function, *args):
    """Call a command's body: a UserError becomes one line on stderr and exit status 2."""
    try:
        return function(*args)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
