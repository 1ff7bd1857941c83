"""Named input validators and how an input's `validation` picks a validator or a regex."""

from __future__ import annotations

import pytest

from nmc.protocol.ddl import ActionSpec, Input, InputError, validate_inputs
from nmc.protocol.status import Status
from nmc.protocol.validators import (
    VALIDATORS,
    hostname,
    ipaddress,
    ipv4address,
    ipv6address,
    shellsafe,
)


@pytest.mark.parametrize("value", ["", "nginx", "a b c", "/etc/hosts", "x=1,y=2", "it's \"quoted\"", "a-b_c.d"])
def test_shellsafe_accepts_plain_text(value: str) -> None:
    assert shellsafe(value) is None


@pytest.mark.parametrize("char", ["`", "$", ";", "|", "&", ">", "<", "\n", "\r"])
def test_shellsafe_refuses_shell_syntax_and_names_the_character(char: str) -> None:
    why = shellsafe(f"nginx{char}reboot")
    assert why is not None and repr(char) in why and "shellsafe" in why


@pytest.mark.parametrize(("fn", "good", "bad"), [
    (ipv4address, ["10.0.0.1", "255.255.255.255", "0.0.0.0"], ["10.0.0.256", "10.0.0", "::1", "host", "010.0.0.1"]),
    (ipv6address, ["::1", "fe80::1", "2001:db8::8a2e:370:7334"], ["10.0.0.1", "2001:db8:::1", "g::1"]),
    (ipaddress, ["10.0.0.1", "::1"], ["", "10.0.0.1/24", "localhost"]),
    (hostname, ["web1", "web1.example.com", "web1.example.com.", "a-b.c", "1.2.3.4"],
     ["", "-web", "web-", "a..b", "under_score", "a" * 64, ".".join(["a" * 63] * 4), "sp ace"]),
])
def test_address_and_name_validators(fn, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert fn(value) is None, value
    for value in bad:
        assert fn(value) is not None, value


def test_registry_holds_the_named_validators() -> None:
    assert set(VALIDATORS) == {"shellsafe", "ipv4address", "ipv6address", "ipaddress", "hostname"}
    with pytest.raises(TypeError):
        VALIDATORS["mine"] = shellsafe  # type: ignore[index]  # read-only: no module-level mutable state


def _reject(inp: Input, value: object) -> InputError:
    with pytest.raises(InputError) as info:
        validate_inputs(ActionSpec("act", inputs=(inp,)), {inp.name: value})
    return info.value


def test_a_validator_name_in_validation_runs_the_validator() -> None:
    inp = Input("package", validation="shellsafe")
    assert validate_inputs(ActionSpec("act", inputs=(inp,)), {"package": "nginx"}) == {"package": "nginx"}
    err = _reject(inp, "nginx; rm -rf /")
    assert err.status is Status.INVALID_DATA
    assert err.reason == "input 'package' must not contain ';' (shellsafe)"
    assert _reject(Input("ip", validation="ipv4address"), "10.1").reason == "input 'ip' is not an IPv4 address"


def test_anything_else_in_validation_is_a_regex() -> None:
    # "hostnames" is not a validator name, so it is a pattern searched in the value.
    inp = Input("x", validation="hostnames")
    assert validate_inputs(ActionSpec("act", inputs=(inp,)), {"x": "all hostnames"}) == {"x": "all hostnames"}
    assert "does not match /hostnames/" in _reject(inp, "hostname").reason
    # A pattern that would read as a name is written so it no longer is one.
    literal = Input("x", validation="(?:hostname)")
    assert validate_inputs(ActionSpec("act", inputs=(literal,)), {"x": "my hostname"}) == {"x": "my hostname"}


def test_list_items_are_validated_one_by_one() -> None:
    inp = Input("args", "list", validation="shellsafe", maxlength=5)
    spec = ActionSpec("act", inputs=(inp,))
    assert validate_inputs(spec, {"args": ["-l", "/tmp", 3]}) == {"args": ["-l", "/tmp", 3]}
    assert "'|'" in _reject(inp, ["-l", "a|b"]).reason
    assert "longer than 5" in _reject(inp, ["-l", "abcdef"]).reason


def test_bad_regex_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="input 'x': bad validation regex"):
        Input("x", validation="(")
