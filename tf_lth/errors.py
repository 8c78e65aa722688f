"""The one exception type tf-lth raises for bad input; the command line prints it as one line."""


class TfLthError(ValueError):
    """A problem with the user's input (flag, model, data, checkpoint) and how to fix it."""
