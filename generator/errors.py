"""The project's own error type: every problem a user can cause ends up as one of these."""


class GeneratorError(Exception):
    """A problem with the user's input (a file, a flag, a checkpoint), explained in one line.

    The command line prints the message on stderr and exits with status 2; the Python API
    raises it unchanged.
    """


class ArgumentError(GeneratorError, ValueError):
    """A bad argument of a library call, named as the call names it (``top_k must be at least 1, not 0``).

    ``argument`` is the parameter, ``problem`` the rest of the sentence, ``others`` the further
    parameters the sentence names. The command line prints the same sentence with each name
    replaced by the flag that sets it (``--top-k must be at least 1, not 0``); a boolean named as
    ``force=True`` becomes the bare flag. ``ArgumentError.sentence`` makes one whose sentence does
    not begin with a parameter.
    """

    def __init__(self, argument: str, problem: str, *others: str):
        super().__init__(f"{argument} {problem}" if argument else problem)
        self.argument, self.problem, self.others = argument, problem, others
        self.leading = bool(argument)  # the sentence begins with the argument

    @classmethod
    def sentence(cls, text: str, argument: str, *others: str) -> "ArgumentError":
        """The error ``text``, which names ``argument`` (and ``others``) somewhere inside it."""
        error = cls("", text, argument, *others)
        error.argument = argument
        return error

    def worded(self, name) -> str:
        """The sentence with ``name(argument)`` (a function: parameter -> flag) in place of every parameter
        (a name inside a path or a longer word is left alone)."""
        import re

        problem = self.problem
        for other in self.others:
            problem = re.sub(rf"(?<![\w\-/.]){re.escape(other)}(=True)?(?![\w\-/]|\.\w)", name(other), problem)
        return f"{name(self.argument)} {problem}" if self.leading else problem
