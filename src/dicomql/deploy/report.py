"""What a deploy run reports: an outcome per resource, the run's summary, and the progress
callbacks a front end (the CLI) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dicomql.deploy.manifest import Resource

# What happened to a resource; the dry run says "would create" and so on.
CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
APPLIED = "applied"
EXPORTED = "exported"
RAN = "ran"
SKIPPED = "skipped"
DELETED = "deleted"
KEPT = "kept"
ABSENT = "absent"
IN_STATE = "in desired state"
DRIFTED = "drifted"
UNKNOWN = "unknown"

CHANGES = frozenset({CREATED, UPDATED, APPLIED, DELETED, RAN})
# How a dry run words the changes it would make.
PLANNED = {
    CREATED: "would be created",
    UPDATED: "would be updated",
    APPLIED: "would be applied",
    DELETED: "would be deleted",
    RAN: "would run",
}


@dataclass
class Outcome:
    """What became of one resource."""

    resource: str
    action: str
    detail: str = ""
    dry_run: bool = False

    def __str__(self) -> str:
        action = PLANNED.get(self.action, self.action) if self.dry_run else self.action
        return f"{self.resource}: {action}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    """The result of one build, test or teardown."""

    command: str
    stack_name: str
    stack_env: str
    dry_run: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.action in CHANGES]

    @property
    def drifted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in (DRIFTED, ABSENT, UNKNOWN)]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.action] = counts.get(outcome.action, 0) + 1
        tally = ", ".join(
            f"{count} {PLANNED.get(action, action) if self.dry_run else action}"
            for action, count in counts.items()
        )
        tally = tally or "nothing"
        prefix = f"{self.command} {self.stack_name} ({self.stack_env})"
        if self.dry_run:
            return f"{prefix}, dry run: {tally}"
        if self.command == "test":
            verdict = "drift found" if self.drifted else "no drift"
            return f"{prefix}: {tally}; {verdict}"
        verdict = "" if self.changed else "; no changes"
        return f"{prefix}: {tally}{verdict}"


class Reporter(Protocol):
    """Receives progress; the CLI prints it."""

    def resource(self, resource: Resource, message: str) -> None:
        """A step on ``resource`` (``checking``, ``creating`` …)."""

    def query(self, resource: Resource, anchor: str, sql: str) -> None:
        """A rendered query (masked), for ``--dry-run`` and ``--show-queries``."""

    def outcome(self, outcome: Outcome) -> None:
        """A resource is done."""


class SilentReporter:
    """Reports nothing (the default)."""

    def resource(self, resource: Resource, message: str) -> None:
        pass

    def query(self, resource: Resource, anchor: str, sql: str) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        pass
