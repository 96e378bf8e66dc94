"""The one exception type for mistakes a user can fix (bad flags, missing data, bad files).

main.py prints such an error as one line and exits with status 2, without a traceback.
The message names the problem and the fix.
"""


class UserError(Exception):
    pass


def one_line(error):
    """The user-facing line of an error, also when a DataLoader worker re-raised it with the
    worker's traceback folded into the message."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("UserError: ", 1)[-1]
