"""The few protobuf messages of veil/v1/veil.proto the client needs,
encoded and decoded by hand (no protoc, no generated code).

Field numbers follow proto/veil/v1/veil.proto; the Rust side pins the wire
bytes of ScanCommand in a test, and the integration tests exercise every
message here against the real server.
"""

TYPE_URL_PREFIX = "type.googleapis.com/veil.v1."


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _str_field(num: int, s: str) -> bytes:
    return _len_field(num, s.encode("utf-8"))


def _varint_field(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


def encode_any(message_name: str, value: bytes) -> bytes:
    return _str_field(1, TYPE_URL_PREFIX + message_name) + _len_field(2, value)


def encode_scan(dataset, columns=None, filter=None, limit=None) -> bytes:
    out = _str_field(1, dataset)
    for c in columns or []:
        out += _str_field(2, c)
    if filter:
        out += _str_field(3, filter)
    if limit is not None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        out += _varint_field(4, int(limit))
    return encode_any("ScanCommand", out)


def encode_sql(query: str) -> bytes:
    return encode_any("SqlCommand", _str_field(1, query))


def encode_string_message(*fields) -> bytes:
    """A message whose fields 1..n are strings (empty ones omitted)."""
    out = b""
    for i, f in enumerate(fields, start=1):
        if f:
            out += _str_field(i, f)
    return out


def encode_user_ref(subject: str, issuer: str = "") -> bytes:
    return encode_string_message(issuer, subject)


def encode_set_user_disabled(subject: str, disabled: bool, issuer: str = "") -> bytes:
    return _len_field(1, encode_user_ref(subject, issuer)) + (_varint_field(2, 1) if disabled else b"")


def encode_permission(subject: str, permission: str, issuer: str = "") -> bytes:
    return _len_field(1, encode_user_ref(subject, issuer)) + _str_field(2, permission)


def _groups_and_attributes(groups, attributes, group_field: int, attribute_field: int) -> bytes:
    """Repeated group strings and AttributeValues entries; attributes map a
    key to a value or a list of values."""
    out = b"".join(_str_field(group_field, g) for g in groups or ())
    for key, values in (attributes or {}).items():
        if isinstance(values, str):
            values = [values]
        entry = _str_field(1, key) + b"".join(_str_field(2, v) for v in values)
        out += _len_field(attribute_field, entry)
    return out


def encode_put_user(subject: str, groups=(), attributes=None, issuer: str = "") -> bytes:
    """PutUserRequest; attributes map a key to a value or a list of values."""
    return _len_field(1, encode_user_ref(subject, issuer)) + _groups_and_attributes(groups, attributes, 2, 3)


def encode_delete_user(subject: str, issuer: str = "") -> bytes:
    return _len_field(1, encode_user_ref(subject, issuer))


def _read_varint(buf: bytes, i: int):
    shift = 0
    n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def parse(buf: bytes) -> dict:
    """Field number -> list of raw values (int for varints, bytes otherwise)."""
    fields = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v = bytes(buf[i : i + n])
            i += n
        elif wire == 1:
            v = bytes(buf[i : i + 8])
            i += 8
        elif wire == 5:
            v = bytes(buf[i : i + 4])
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(num, []).append(v)
    return fields


def _s(fields, num) -> str:
    return fields.get(num, [b""])[0].decode("utf-8")


def _ss(fields, num):
    return [v.decode("utf-8") for v in fields.get(num, [])]


def decode_description(buf: bytes) -> dict:
    f = parse(buf)
    columns = []
    for raw in f.get(5, []):
        c = parse(raw)
        columns.append(
            {
                "name": _s(c, 1),
                "type": _s(c, 2),
                "description": _s(c, 3),
                "tags": _ss(c, 4),
                "mask": _s(c, 5) or None,
            }
        )
    return {
        "name": _s(f, 1),
        "description": _s(f, 2),
        "owners": _ss(f, 3),
        "tags": _ss(f, 4),
        "columns": columns,
        "format": _s(f, 6),
        "rows_filtered": bool(f.get(7, [0])[0]),
        "access": _s(f, 8) or "read",
        "experts": _ss(f, 9),
    }


def encode_search(query: str, limit=None) -> bytes:
    out = _str_field(1, query) if query else b""
    if limit:
        out += _varint_field(2, int(limit))
    return out


def decode_search_hit(buf: bytes) -> dict:
    f = parse(buf)
    return {
        "name": _s(f, 1),
        "description": _s(f, 2),
        "access": _s(f, 3) or "read",
        "matches": _ss(f, 4),
        "owners": _ss(f, 5),
        "tags": _ss(f, 6),
        "experts": _ss(f, 7),
    }


def decode_whoami(buf: bytes) -> dict:
    f = parse(buf)
    attrs = {}
    for raw in f.get(4, []):
        e = parse(raw)
        attrs[_s(e, 1)] = [v for v in _s(e, 2).split(",") if v]
    return {
        "issuer": _s(f, 1),
        "subject": _s(f, 2),
        "groups": _ss(f, 3),
        "attributes": attrs,
        "permissions": _ss(f, 5),
    }


def decode_ack(buf: bytes) -> str:
    return _s(parse(buf), 1)


def decode_user_entry(buf: bytes) -> dict:
    f = parse(buf)
    attrs = {}
    for raw in f.get(4, []):
        e = parse(raw)
        attrs[_s(e, 1)] = _ss(e, 2)
    return {
        "issuer": _s(f, 1),
        "subject": _s(f, 2),
        "groups": _ss(f, 3),
        "attributes": attrs,
        "permissions": _ss(f, 5),
        "disabled": bool(f.get(6, [0])[0]),
        "origin": _s(f, 7) or None,
    }


def encode_policy_write(spec_json: str, expected_version=None) -> bytes:
    out = _str_field(1, spec_json)
    if expected_version:
        out += _varint_field(2, int(expected_version))
    return out


def encode_delete_policy(name: str, expected_version=None) -> bytes:
    out = _str_field(1, name)
    if expected_version:
        out += _varint_field(2, int(expected_version))
    return out


def encode_explain(subject: str, dataset: str, groups=(), attributes=None, issuer: str = "") -> bytes:
    return (
        _len_field(1, encode_user_ref(subject, issuer))
        + _str_field(2, dataset)
        + _groups_and_attributes(groups, attributes, 3, 4)
    )


def encode_profile_k_anonymity(dataset: str, columns) -> bytes:
    return _str_field(1, dataset) + b"".join(_str_field(2, c) for c in columns)


def encode_request_unmask(dataset: str, column: str, values, reason: str) -> bytes:
    return (
        _str_field(1, dataset)
        + _str_field(2, column)
        + b"".join(_str_field(3, v) for v in values)
        + _str_field(4, reason)
    )


def encode_list_access_requests(dataset: str = "", all: bool = False) -> bytes:
    return (_str_field(1, dataset) if dataset else b"") + (_varint_field(2, 1) if all else b"")


def encode_revoke_access(dataset: str, subject: str, note: str = "", issuer: str = "") -> bytes:
    out = _str_field(1, dataset) + _len_field(2, encode_user_ref(subject, issuer))
    if note:
        out += _str_field(3, note)
    return out


def encode_set_experts(dataset: str, subjects, issuer: str = "") -> bytes:
    return _str_field(1, dataset) + b"".join(_len_field(2, encode_user_ref(s, issuer)) for s in subjects)


def encode_discover(dataset: str, sample_rows=None, min_confidence=None) -> bytes:
    out = _str_field(1, dataset)
    if sample_rows:
        out += _varint_field(2, int(sample_rows))
    if min_confidence:
        out += _varint_field(3, int(min_confidence))
    return out


def encode_decide_tag_proposal(dataset: str, column: str, tag: str, accept: bool, tag_as: str = "") -> bytes:
    out = _str_field(1, dataset) + _str_field(2, column) + _str_field(3, tag)
    if accept:
        out += _varint_field(4, 1)
    if tag_as:
        out += _str_field(5, tag_as)
    return out


def encode_register_dataset(name: str, format: str, location: str, description: str = "", hive_partitioned: bool = False) -> bytes:
    out = encode_string_message(name, format, location, description)
    if hive_partitioned:
        out += _varint_field(5, 1)
    return out


def encode_set_column_tags(dataset: str, column: str, tags) -> bytes:
    return _str_field(1, dataset) + _str_field(2, column) + b"".join(_str_field(3, t) for t in tags)
