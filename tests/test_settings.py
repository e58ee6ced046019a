"""The serve settings parser (gateway_lib/settings.py): flags and GATEWAY_* spellings."""

from __future__ import annotations

import pytest

from gateway_lib import cli
from gateway_lib.settings import FALSE_WORDS, TRUE_WORDS, Defaults, read_serve_settings

DEFAULTS = Defaults(audit_log="/tmp/audit.jsonl", max_line_bytes=4096, timeout_ms=1000, tool_cache_ttl_s=1.0,
                    reload_debounce_ms=100, max_result_tokens=100, init_strategy="off",
                    init_strategies=("off", "lazy", "eager"), spare_idle_s=1.0)


def settings(*flags: str, **environ: str):
    return read_serve_settings(cli._serve_parser().parse_args(list(flags)), environ, DEFAULTS)


@pytest.mark.parametrize("word", sorted(FALSE_WORDS) + [""])
def test_debug_is_off_unless_asked_for_and_every_false_word_or_empty_leaves_it_off(word):
    # The end-to-end half (no get_gateway_status without debug mode) is in test_guarantee_security.py.
    assert settings().debug is False
    assert settings(GATEWAY_DEBUG=word).debug is False
    assert settings(GATEWAY_DEBUG=word.upper()).debug is False


@pytest.mark.parametrize("word", sorted(TRUE_WORDS))
def test_debug_is_on_with_the_flag_or_any_true_word(word):
    assert settings("--debug").debug is True
    assert settings(GATEWAY_DEBUG=word).debug is True
