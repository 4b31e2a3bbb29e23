"""The project's own error type. Everything raised as a `UserError` is a problem with the user's
input or environment (a bad config value, missing data, a run folder that cannot be used); the
tools print its message as one line and exit with code 2 (a `Stopped` one: its own code). Any
other exception is a bug and keeps its traceback."""


class UserError(Exception):
    """A problem the user can fix; its message names it in one line."""


class Stopped(UserError):
    """Work stopped on a signal after saving what it could; the tools print its line and exit
    with `exit_code` (128 + the signal number: 130 for SIGINT, 143 for SIGTERM)."""
    exit_code = 130
