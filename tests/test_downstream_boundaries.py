"""The import boundaries of gateway_lib/downstream/: three named modules speak to the SDK, one to asyncio.

Read from the source with `ast`, so an import inside a function counts as much as one at
the top: the gateway defers these imports for start-up time, not to hide them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway_lib"
# The SDK boundary: sessions and requests, a call's relayed callbacks, the OAuth providers.
SDK_MODULES = [PACKAGE / "downstream" / name for name in ("sdk.py", "sdk_relay.py", "sdk_oauth.py")]
LOOP_MODULE = PACKAGE / "downstream" / "loop.py"

SDK_PACKAGES = {"mcp", "mcp_types", "httpx2", "pydantic", "pydantic_core"}
LOOP_PACKAGES = {"asyncio", "anyio"}


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every absolute import in the file, wherever it stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


MODULES = sorted([*PACKAGE.rglob("*.py"), ROOT / "gateway.py"])


def test_the_scan_sees_the_imports_that_the_boundary_modules_make():
    # Guards the scan itself: if it missed imports inside functions, the tests below could not fail.
    assert {"mcp", "httpx2", "mcp_types"} <= imported_packages(SDK_MODULES[0])
    assert {"mcp_types", "pydantic"} <= imported_packages(SDK_MODULES[1])
    assert {"mcp", "httpx2"} <= imported_packages(SDK_MODULES[2])
    assert LOOP_PACKAGES <= imported_packages(LOOP_MODULE)


def offenders(packages: set[str], allowed: list[Path]) -> dict[str, set[str]]:
    """Every module not in `allowed` that imports one of `packages`, with what it imports."""
    found = {str(path.relative_to(ROOT)): imported_packages(path) & packages for path in MODULES if path not in allowed}
    return {name: hit for name, hit in found.items() if hit}


def test_only_the_sdk_modules_import_mcp_httpx2_or_pydantic():
    assert offenders(SDK_PACKAGES, SDK_MODULES) == {}


def test_only_the_loop_module_imports_asyncio_or_anyio():
    assert offenders(LOOP_PACKAGES, [LOOP_MODULE]) == {}
