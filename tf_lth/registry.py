"""Named choices: one :class:`Registry` per kind of option (selection, survivors, rewind modes,
controls, datasets, models), so that adding a choice is one definition in one place.

A registry maps a name to an object (a function, a spec, a strategy); asking for a name it does not
hold is a one-line :class:`~tf_lth.errors.TfLthError` that lists the choices. The command line's
``choices=`` and the config's validation read the same registry, and nothing here imports
TensorFlow, so ``tf-lth --help`` and flag errors answer at once.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from tf_lth.errors import TfLthError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered, append-only mapping of names to ``T`` with one-line errors.

    Args:
        what: what a name names, for messages (``"rewind mode"``).
    """

    def __init__(self, what: str):
        self.what = what
        self.entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a name is registered once)."""
        if name in self.entries:
            raise TfLthError(f"{self.what} {name!r} is registered twice")
        self.entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@REGISTRY.register("name")``."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry of ``name``, or a one-line error naming the choices."""
        if name not in self.entries:
            raise TfLthError(f"unknown {self.what} {name!r}: choose one of {', '.join(self.entries)}")
        return self.entries[name]

    def check(self, names) -> tuple:
        """``names`` as a tuple, each one registered (else the one-line error)."""
        names = (names,) if isinstance(names, str) else tuple(names)
        for name in names:
            self.get(name)
        return names

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def __contains__(self, name) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self):
        return self.entries.items()
