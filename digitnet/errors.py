"""The one user-facing error: anything a user can cause or fix raises DigitnetError."""


class DigitnetError(Exception):
    """A problem the user can fix; the message names it, the offending value and what to try."""
