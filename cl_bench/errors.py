"""The one exception type a user can cause: the CLI prints its message and exits 2."""


class ClBenchError(Exception):
    """A user-fixable problem: bad YAML, missing data, incompatible method/task, bad checkpoint.

    The message is one line that says what is wrong and how to fix it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
