"""README keeps up with the code: every flag, variable, error code and config key is documented.

A reader configures the gateway from README alone; an option it does not mention does not
exist for them.
"""

import json
import re

import pytest

from gateway_lib import cli, errors
from harness import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SCHEMAS = ROOT / "schemas"


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def documented(name: str) -> bool:
    """`name` stands in backticks in some table row of README."""
    return any(f"`{name}`" in row for row in table_rows(README))


def serve_flags() -> list[str]:
    flags = [opt for action in cli._serve_parser()._actions for opt in action.option_strings]
    return [flag for flag in flags if flag.startswith("--") and flag not in ("--help", "--version")]


def environment_variables() -> list[str]:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "gateway_lib").glob("*.py"))
    return sorted(set(re.findall(r'"(GATEWAY_[A-Z_]+)"', source)) - {"GATEWAY_ERROR"})


def error_codes() -> list[str]:
    return sorted({cls.code for cls in vars(errors).values()
                   if isinstance(cls, type) and issubclass(cls, errors.GatewayError) and cls is not errors.GatewayError})


def schema_keys(name: str, *path: str) -> list[str]:
    node = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    for step in path:
        node = node[step]
    return sorted(node["properties"])


@pytest.mark.parametrize("flag", serve_flags())
def test_every_serve_flag_is_in_the_readme_tables(flag):
    assert documented(flag)


@pytest.mark.parametrize("variable", environment_variables())
def test_every_environment_variable_is_in_the_readme_tables(variable):
    assert documented(variable)


@pytest.mark.parametrize("code", error_codes())
def test_every_gateway_error_code_is_in_the_errors_table(code):
    assert documented(code)


@pytest.mark.parametrize("key", schema_keys("mcp-config.schema.json", "$defs", "server"))
def test_every_server_key_of_the_schema_is_in_the_readme(key):
    assert f"`{key}`" in README


def test_the_lists_checked_here_are_not_empty():
    # Guards the parametrized tests above against silently checking nothing.
    assert len(serve_flags()) >= 9 and len(environment_variables()) >= 12 and len(error_codes()) == 14
    assert {"command", "url", "session"} <= set(schema_keys("mcp-config.schema.json", "$defs", "server"))


@pytest.mark.parametrize("script", sorted(re.findall(r"tests/(benchmark\w*\.py)", README)) or ["none named"])
def test_every_benchmark_script_readme_names_exists_and_compiles(script):
    # The benchmark is not part of the suite (it runs for minutes), so nothing else would
    # notice a script a merge left unparseable.
    path = ROOT / "tests" / script
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_ci_runs_the_test_command_readme_gives_verbatim():
    # README promises one command that sets up and runs the whole suite, and that CI runs it.
    section = README.split("**Set up and run the whole test suite:**", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci_lines
