"""The one-shot callback listener: 127.0.0.1 only, /callback only, exactly one valid state,
a short page, closed after the callback, at its time-out, or when abandoned."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from gateway_lib.oauth_signin import Callback, CallbackListener, SignInFailed, state_of

STATE = "expected-state-1234"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_it_accepts_only_its_state_on_callback_then_closes():
    listener = CallbackListener(0, STATE, timeout_s=30).start()
    base = listener.redirect_uri
    try:
        wrong = get(f"{base}?code=c1&state=other")
        elsewhere = get(f"http://127.0.0.1:{listener.port}/other?code=c1&state={STATE}")
        right = get(f"{base}?code=c2&state={STATE}&iss=https%3A%2F%2Fas.example")
        result = listener.result.result(timeout=10)
    finally:
        listener.close()
    assert wrong[0] == 400 and elsewhere[0] == 404 and right[0] == 200 and "You can close this tab" in right[1]
    assert result == Callback(code="c2", state=STATE, iss="https://as.example", error=None)
    assert refused(listener.port)


def test_it_listens_on_the_loopback_address_only():
    listener = CallbackListener(0, STATE, timeout_s=30)
    try:
        assert listener.redirect_uri == f"http://127.0.0.1:{listener.port}/callback"
        assert listener._server.server_address[0] == "127.0.0.1"
    finally:
        listener.close()


def test_it_gives_up_at_its_time_out_and_closes():
    listener = CallbackListener(0, STATE, timeout_s=0.3).start()
    with pytest.raises(SignInFailed, match="no browser came back"):
        listener.result.result(timeout=10)
    listener.close()
    assert refused(listener.port)


def test_a_refusal_from_the_authorization_server_is_reported():
    listener = CallbackListener(0, STATE, timeout_s=30).start()
    try:
        status, _ = get(f"{listener.redirect_uri}?error=access_denied&state={STATE}")
        result = listener.result.result(timeout=10)
    finally:
        listener.close()
    assert status == 200 and result.error == "access_denied" and result.code is None


def test_a_busy_port_is_a_clear_failure():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SignInFailed, match="is not free"):
            CallbackListener(taken.getsockname()[1], STATE, timeout_s=1)


def test_the_code_never_shows_in_the_callbacks_repr():
    assert "secret-code" not in repr(Callback(code="secret-code", state=STATE))


def test_the_state_is_read_from_the_authorization_url():
    assert state_of("https://as.example/authorize?client_id=c&state=abc%3D") == "abc="
    assert state_of("https://as.example/authorize?client_id=c") is None
