"""The generated messages encode what the server decodes: the same bytes
the Rust side pins (proto/src/lib.rs), no server needed."""

import pytest

from veil import _proto
from veil.v1 import veil_pb2 as pb


def test_scan_command_wire_bytes_match_the_rust_pin():
    cmd = pb.ScanCommand(dataset="a.b", columns=["x"], filter="x > 1", limit=5)
    assert cmd.SerializeToString() == b"\x0a\x03a.b\x12\x01x\x1a\x05x > 1\x20\x05"


def test_scan_is_wrapped_in_any_with_the_type_url():
    any_ = pb.Any.FromString(_proto.encode_scan("a.b", ["x"], "x > 1", 5))
    assert any_.type_url == "type.googleapis.com/veil.v1.ScanCommand"
    assert any_.value == b"\x0a\x03a.b\x12\x01x\x1a\x05x > 1\x20\x05"


def test_a_zero_limit_is_sent_and_no_limit_is_not():
    zero = pb.ScanCommand.FromString(pb.Any.FromString(_proto.encode_scan("a.b", limit=0)).value)
    assert zero.HasField("limit") and zero.limit == 0
    none = pb.ScanCommand.FromString(pb.Any.FromString(_proto.encode_scan("a.b")).value)
    assert not none.HasField("limit")
    with pytest.raises(ValueError):
        _proto.encode_scan("a.b", limit=-1)


def test_user_is_present_even_with_the_default_issuer():
    # The server refuses a request whose user message is absent.
    req = pb.PermissionRequest.FromString(_proto.encode_permission("bob", "AUDIT"))
    assert req.HasField("user") and req.user.subject == "bob" and req.user.issuer == ""


def test_attributes_take_one_value_or_a_list():
    req = pb.PutUserRequest.FromString(_proto.encode_put_user("bob", ["g"], {"a": "x", "b": ["y", "z"]}))
    assert [(a.key, list(a.values)) for a in req.attributes] == [("a", ["x"]), ("b", ["y", "z"])]


def test_whoami_attributes_are_split_back_into_lists():
    body = pb.WhoAmI(subject="bob", attributes={"k": "a,b", "e": ""}).SerializeToString()
    assert _proto.decode_whoami(body)["attributes"] == {"k": ["a", "b"], "e": []}
