"""The errors every SAM3 checkpoint problem is reported with."""


class Sam3CheckpointError(RuntimeError):
    """A SAM3 checkpoint that is missing, unreadable or laid out in a way this loader does not know."""


class Sam3TrackerMissing(Sam3CheckpointError):
    """Tracking asked of a SAM3 checkpoint that holds no video tracker (or one transformers cannot run)."""
