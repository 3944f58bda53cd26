"""The safety journal: before-images of every entry we change, on disk before the PBX is touched.

JSON Lines, append-only. Each operation writes a `begin` record (time, tool, ids, the
entries as they were) before its first write to the PBX, and an `end` record with the
outcome per id when it finishes. An operation with no `end` record was cut off (the
process died); its before-images are still there to restore from.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from .errors import ThreeCXMcpError
from .models import BlacklistEntry


class JournalError(ThreeCXMcpError):
    hint = "Set THREECX_JOURNAL to a file this user can write, e.g. in your home directory."


def default_path(sandbox: bool) -> Path:
    name = "sandbox-journal.jsonl" if sandbox else "journal.jsonl"
    return Path(platformdirs.user_state_dir("threecx-mcp", appauthor=False)) / name


@dataclass
class Operation:
    operation_id: str
    time: str
    tool: str
    pbx: str
    before: list[BlacklistEntry]
    outcome: str | None = None
    statuses: dict[str, str] = field(default_factory=dict)


class Journal:
    """Appends with flush + fsync; a journal that cannot be written stops the operation."""

    def __init__(self, path: Path, pbx: str) -> None:
        self.path = path
        self.pbx = pbx
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Journal(path={str(self.path)!r})"

    def begin(self, tool: str, before: Sequence[BlacklistEntry]) -> str:
        operation_id = uuid.uuid4().hex[:12]
        self._append(
            {
                "phase": "begin",
                "operation_id": operation_id,
                "time": _now(),
                "tool": tool,
                "pbx": self.pbx,
                "ids": [e.id for e in before],
                "before": [e.model_dump() for e in before],
            }
        )
        return operation_id

    def end(self, operation_id: str, outcome: str, statuses: Mapping[str, str]) -> None:
        self._append(
            {"phase": "end", "operation_id": operation_id, "time": _now(), "outcome": outcome, "statuses": dict(statuses)}
        )

    def operations(self) -> list[Operation]:
        """Every operation on this PBX, oldest first; unreadable lines are skipped, not fatal."""
        operations: dict[str, Operation] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise JournalError(f"Cannot read the safety journal {str(self.path)!r}: {exc.strerror or exc}.") from None
        for line in lines:
            try:
                record = json.loads(line)
                if record["phase"] == "begin" and record.get("pbx") == self.pbx:
                    operations[record["operation_id"]] = Operation(
                        record["operation_id"],
                        record["time"],
                        record["tool"],
                        record["pbx"],
                        [BlacklistEntry.model_validate(e) for e in record["before"]],
                    )
                elif record["phase"] == "end" and record["operation_id"] in operations:
                    operation = operations[record["operation_id"]]
                    operation.outcome, operation.statuses = record["outcome"], record["statuses"]
            except (ValueError, KeyError, TypeError):
                continue
        return list(operations.values())

    def _append(self, record: dict[str, object]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise JournalError(
                    f"Cannot write the safety journal {str(self.path)!r} ({exc.strerror or exc}); "
                    "nothing was changed on the PBX."
                ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
