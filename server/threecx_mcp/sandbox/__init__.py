"""The embedded sandbox PBX: try the server, and test it, without a 3CX licence."""

from .pbx import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SEED_ENTRIES, Fault, Sandbox
from .serve import LoopbackServer

__all__ = ["SANDBOX_CLIENT_ID", "SANDBOX_CLIENT_SECRET", "SEED_ENTRIES", "Fault", "LoopbackServer", "Sandbox"]
