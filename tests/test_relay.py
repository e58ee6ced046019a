"""Unit tests of the relay's pure parts: the call's clock and the capabilities a session declares."""

from types import MappingProxyType

from gateway_lib.model import AgentRules, RulesConfig
from gateway_lib.relay import CallClock, CallRelay, ClientLink


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_restarts_the_timeout_but_never_past_the_cap():
    time = FakeTime()
    clock = CallClock(timeout_s=2, cap_s=5, clock=time)
    time.now += 1.5
    clock.restart()
    assert clock.remaining() == 2  # counted again from the progress
    time.now += 3
    clock.restart()
    assert clock.remaining() == 0.5  # the cap, 5 s after the start


def test_a_wait_for_the_client_pauses_the_timeout_and_not_the_cap():
    time = FakeTime()
    clock = CallClock(timeout_s=2, cap_s=10, clock=time)
    time.now += 1
    with clock.paused():
        time.now += 5
        assert clock.remaining() == 4  # while paused, only the cap counts
    assert clock.remaining() == 1  # the second the timeout had left when the wait began
    with clock.paused():
        time.now += 6
    assert clock.remaining() <= 0


def test_a_timeout_above_the_cap_is_held_to_the_cap():
    assert CallClock(timeout_s=900, cap_s=600, clock=FakeTime()).timeout_s == 600


def test_a_session_declares_only_what_the_client_declared_and_the_agent_may_use():
    rules = RulesConfig(path="r", agents=MappingProxyType({"a": AgentRules(allow_client_requests=("roots", "sampling"))}))
    declared = {"sampling": {"tools": {}}, "roots": {"listChanged": True}, "elicitation": {"form": {}, "url": {}}}
    relay = CallRelay(ClientLink(None, "2025-11-25", declared), CallClock(1, 1), server="s", agent="a",
                      rules=rules, audit=None)
    assert relay.capabilities() == {"sampling": {"tools": {}}, "roots": {"listChanged": True}}
    assert relay.capability_key() == ("roots", "sampling", "sampling.tools")
