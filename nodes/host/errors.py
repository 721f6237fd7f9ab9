"""The error every part of the host adapter raises for a problem the user can fix."""


class GuidanceError(RuntimeError):
    """A problem the user can fix; the message says how."""
