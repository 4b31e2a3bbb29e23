"""The project's own error type. Everything raised as a `UserError` is a problem with the user's
input or environment (a bad config value, missing data, a run folder that cannot be used); the
tools print its message as one line and exit with code 2. Any other exception is a bug and keeps
its traceback."""


class UserError(Exception):
    """A problem the user can fix; its message names it in one line."""
