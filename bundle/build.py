"""Build the Claude Desktop bundle: `python bundle/build.py [OUT]` writes dist/threecx-mcp-<version>.mcpb.

An MCPB of server type "uv" carries the project itself (pyproject.toml, its README and the package
source) beside manifest.json, and Claude Desktop's own uv installs the dependencies from PyPI on first
start. The manifest lives here and the source in server/, so this copies exactly those files into a
clean folder (no virtualenv, caches or tests) and lets the official MCPB CLI validate and pack it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The CLI version the manifest was checked with (manifest_version 0.4, server type "uv").
MCPB = "@anthropic-ai/mcpb@2.1.2"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# What `uv run` needs to build and install the project (pyproject names README.md as its readme); the
# license text travels with every copy of the code.
PROJECT_FILES = ("pyproject.toml", "README.md")
LICENSE_FILES = "LICEN[CS]E*"
PACKAGE = Path("server") / "threecx_mcp"


def stage(folder: Path) -> None:
    """Lay out the bundle's content in `folder`: the manifest, the project files and the package."""
    shutil.copy2(HERE / "manifest.json", folder / "manifest.json")
    for path in [*(REPO / name for name in PROJECT_FILES), *REPO.glob(LICENSE_FILES)]:
        shutil.copy2(path, folder / path.name)
    shutil.copytree(REPO / PACKAGE, folder / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def pack(out: Path) -> None:
    """Validate and pack the staged bundle into `out` with the MCPB CLI (npx fetches it from npm)."""
    npx = shutil.which("npx")
    if npx is None:
        sys.exit("npx was not found: install Node.js 18 or later (it brings npx), then run this again.")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="threecx-mcp-bundle-") as folder:
        stage(Path(folder))
        done = subprocess.run(
            [npx, "--yes", MCPB, "pack", folder, str(out)], check=False, stdin=subprocess.DEVNULL
        )
    if done.returncode != 0:
        sys.exit(
            f"The MCPB CLI could not pack the bundle (exit code {done.returncode}); see its output above."
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit("usage: python bundle/build.py [OUT]  (default: dist/threecx-mcp-<version>.mcpb)")
    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    out = Path(argv[0]) if argv else REPO / "dist" / f"{manifest['name']}-{manifest['version']}.mcpb"
    pack(out.resolve())
    # The MCP Registry's `fileSha256` for an mcpb package; the CLI's summary shows only a SHA-1.
    print(f"{out}\nsha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1:])
