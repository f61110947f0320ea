"""The one exception type a user can cause: the CLI prints its message and exits 2."""

# torch's DataLoader re-raises a worker's exception as ``type(e)("Caught … Original Traceback …
# <module>.ClBenchError: <message>")``; the user needs only the original message.
_WORKER_PREFIX = "Caught ClBenchError in DataLoader worker"
_ORIGINAL = "ClBenchError: "


class ClBenchError(Exception):
    """A user-fixable problem: bad YAML, missing data, incompatible method/task, bad checkpoint.

    The message is one line that says what is wrong and how to fix it.
    """

    def __init__(self, message: str) -> None:
        text = str(message)
        if text.startswith(_WORKER_PREFIX) and _ORIGINAL in text:
            text = text.rsplit(_ORIGINAL, 1)[1]
        super().__init__(" ".join(text.split()))
