"""The project's own error type: every problem a user can cause ends up as one of these."""


class GeneratorError(Exception):
    """A problem with the user's input (a file, a flag, a checkpoint), explained in one line.

    The command line prints the message on stderr and exits with status 2; the Python API
    raises it unchanged.
    """
