"""A registry: the named entries of one kind that grows (label formats, scoring modes), like LLaMA-Factory's
``TEMPLATES``. Standard library only."""

from __future__ import annotations

from typing import Generic, TypeVar

Entry = TypeVar("Entry")


class Registry(dict, Generic[Entry]):
    """{name: entry}; an entry has a ``name``. ``kind`` names the entries in errors, ``option`` the setting that
    chooses one."""

    def __init__(self, kind: str, option: str):
        super().__init__()
        self.kind, self.option = kind, option

    def register(self, entry: Entry) -> Entry:
        """Add an entry (its name becomes a choice of ``option``)."""
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> Entry:
        if name not in self:
            raise ValueError(f"{self.option} must be one of {tuple(self)}, got {name!r}")
        return self[name]
