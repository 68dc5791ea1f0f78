"""The error every SAM3 checkpoint problem is reported with."""


class Sam3CheckpointError(RuntimeError):
    """A SAM3 checkpoint that is missing, unreadable or laid out in a way this loader does not know."""
