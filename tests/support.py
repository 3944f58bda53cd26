"""Constants and helpers the tests share."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from threecx_mcp.client import RetryPolicy

REPO = Path(__file__).resolve().parent.parent
SHARED_XAPI = REPO.parent / "shared" / "3cx-xapi"
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_total=5.0)
AUTH_TOKEN = "test-bearer-token-0123456789"
# Servers the tests spawn journal here, never into the user's state directory.
SUBPROCESS_JOURNAL = Path(tempfile.gettempdir()) / f"threecx-mcp-tests-{os.getpid()}" / "journal.jsonl"
