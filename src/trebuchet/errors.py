"""Exceptions and warnings that Trebuchet raises to users."""


class TrebuchetCompileError(RuntimeError):
    """A graph could not be compiled (raised in strict mode; a warning otherwise)."""


class TrebuchetWarning(UserWarning):
    """Trebuchet fell back to eager or worked around a problem."""
