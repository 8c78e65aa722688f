"""The one exception type tf-lth raises for bad input, and its one warning type.

Both say what is wrong and how to fix it in one line: the command line prints an error as
``tf-lth: error: ...`` (exit code 2), and a :class:`TfLthWarning` is shown as ``tf-lth: warning: ...``
on stderr (one line, not Python's two). Warnings go through :mod:`warnings`, so they can be filtered,
turned into errors (``-W error::tf_lth.errors.TfLthWarning``) or caught with ``pytest.warns``.
"""
from __future__ import annotations

import sys
import warnings


class TfLthError(ValueError):
    """A problem with the user's input (flag, model, data, checkpoint) and how to fix it."""


class TfLthWarning(UserWarning):
    """Something that still works but is probably not what the user meant (e.g. saving a ticket that
    sits at a rewind point, untrained), or a part of a job that was left out (an export format)."""


def warn(message: str) -> None:
    """Warn with a :class:`TfLthWarning` (shown once per distinct message and caller, as Python does)."""
    warnings.warn(" ".join(message.split()), TfLthWarning, stacklevel=3)


_show = warnings.showwarning


def _one_line(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for tf-lth's own warnings: one line, no source excerpt; others as before."""
    if isinstance(category, type) and issubclass(category, TfLthWarning):
        stream = sys.stderr if file is None else file
        try:
            stream.write(f"tf-lth: warning: {message}\n")
        except (OSError, ValueError):  # a closed stream: nowhere to warn
            pass
        return None
    return _show(message, category, filename, lineno, file, line)


if getattr(warnings.showwarning, "__name__", "") != _one_line.__name__:
    warnings.showwarning = _one_line
