"""The one error a user's input causes, in its own module so that `python -m study.run` (which runs study/run.py
as __main__) and the modules importing it raise and catch the same class."""


class UsageError(ValueError):
    """A mistake in what the user typed or wrote: reported in one line, exit status 2."""
