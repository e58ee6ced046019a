"""The process's life in pieces: a thread's death is one line and a status entry."""

from __future__ import annotations

import logging
import threading

from gateway_lib.lifecycle import ThreadDeaths


def test_a_thread_that_dies_is_logged_in_one_line_and_listed_without_its_message(caplog):
    deaths = ThreadDeaths()
    previous = threading.excepthook
    deaths.install()
    try:
        def die() -> None:
            raise RuntimeError("sk-a-secret-in-a-message")

        with caplog.at_level(logging.INFO, logger="gateway_lib"):
            thread = threading.Thread(target=die, name="doomed")
            thread.start()
            thread.join(5)
    finally:
        threading.excepthook = previous
    assert deaths.status() == [{"thread": "doomed", "error": "RuntimeError"}]
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert len(lines) == 1 and "'doomed'" in lines[0]
    assert "sk-a-secret" not in caplog.text
