"""Hostile requests for every operation of a botocore service model, built from the model with a seeded RNG.

Used by ``test_fuzz_operations.py``: each operation gets a few requests (a wrong-typed / hostile body, a
"nearly valid" body with one hostile leaf, and a malformed document), SigV4-signed as botocore signs them,
sent through the in-process ASGI app. Nothing here knows a particular operation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import cbor2
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel, ServiceModel, Shape

from opensage.api.validate import _compiled

HOST = "http://testserver"
NAN = float("nan")
INF = float("inf")
HUGE = "A" * 200_000
HOSTILE_STRINGS = ["", " ", HUGE, "\x00", "../../../../etc/passwd", "' OR 1=1 --", "%s%n%x", "\ud800",
                   "\u202e\U0001f600" * 50, "s3://", "arn:aws:sagemaker:us-east-1:000000000000:model/x" * 50,
                   "-1", "NaN", "a" * 1025, "<script>", "\\", "*", "%", "_", "x.\u00e9\u00e9"]
HOSTILE_NUMBERS = [-1, 0, -(2**63) - 1, 2**63, 2**64 + 1, 10**400, 1e308, -1e308, NAN, INF, -INF, 1.5, -0.0]
HOSTILE_TIMES = [1e308, -1e308, 2**70, -(2**70), NAN, INF, "9999-99-99T99:99:99Z", "not a date", "", 253402300800,
                 -62135596801, "1e308", 0]
WRONG = [None, True, "x", 7, 1.5, [], {}, [1, "a", None], {"a": {"b": []}}, HUGE]
CANDIDATES = ["abc", "a", "ml.m5.large", "arn:aws:sagemaker:us-east-1:000000000000:training-job/abc",
              "arn:aws:iam::000000000000:role/R", "s3://bucket1/key", "1", "abc-1", "a.b", "/a", "2026-01-01",
              "application/json", "arn:aws:sagemaker:us-east-1:000000000000:model-package-group/abc",
              "arn:aws:sagemaker:us-east-1:000000000000:training-plan/abc", "text/csv"]
# How many "nearly valid" requests an implemented operation gets (they reach the service code).
NEARLY_VALID_IMPLEMENTED = 6


def deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


@dataclass
class Probe:
    """One request to send: what it is (for the failure message), and its method, path, headers, body."""

    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ValueMaker:
    """Values by shape: ``valid`` tries to satisfy the model's constraints, ``hostile`` breaks them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def valid(self, shape: Shape, depth: int = 0) -> Any:
        kind = shape.type_name
        meta = shape.metadata
        if kind == "structure":
            out = {}
            for name, member in shape.members.items():
                if member.serialization.get("location"):
                    continue
                if name in shape.required_members or (depth < 3 and self.rng.random() < 0.5):
                    out[name] = self.valid(member, depth + 1)
            return out
        if kind == "list":
            n = max(meta.get("min", 0), 1 if depth < 4 else 0)
            return [self.valid(shape.member, depth + 1) for _ in range(min(n, 3))]
        if kind == "map":
            return {} if depth >= 4 else {self.valid(shape.key, depth + 1): self.valid(shape.value, depth + 1)}
        if kind == "string":
            if shape.enum:
                return self.rng.choice(shape.enum)
            rx = _compiled(meta["pattern"]) if meta.get("pattern") else None
            low, high = meta.get("min", 0), meta.get("max", 10**9)
            for text in self.rng.sample(CANDIDATES, len(CANDIDATES)):
                text = text.ljust(low, "a")
                if len(text) <= high and (rx is None or rx.fullmatch(text)):
                    return text
            return "a" * max(low, 1)
        if kind in ("integer", "long"):
            return int(meta.get("min", 1))
        if kind in ("float", "double"):
            return float(meta.get("min", 1))
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "timestamp":
            return 1767225600
        if kind == "blob":
            return "aGVsbG8="
        return None

    def hostile(self, shape: Shape, depth: int = 0) -> Any:
        kind = shape.type_name
        rng = self.rng
        if rng.random() < 0.25:
            return rng.choice(WRONG)
        if kind == "structure":
            out: dict[str, Any] = {}
            for name, member in shape.members.items():
                if member.serialization.get("location"):
                    continue
                if depth < 4 and rng.random() < 0.6:
                    out[name] = self.hostile(member, depth + 1)
            if rng.random() < 0.3:
                out["UnknownMember" + str(rng.randint(0, 99))] = rng.choice(WRONG)
            return out
        if kind == "list":
            choice = rng.random()
            if choice < 0.1:
                return [self.valid(shape.member, depth + 1)] * 5_000
            return [self.hostile(shape.member, depth + 1) for _ in range(rng.randint(0, 3))]
        if kind == "map":
            if rng.random() < 0.1:
                return {f"k{i}": "v" for i in range(5_000)}
            return {rng.choice(HOSTILE_STRINGS[:8]): self.hostile(shape.value, depth + 1)}
        if kind == "string":
            return rng.choice(HOSTILE_STRINGS)
        if kind in ("integer", "long", "float", "double"):
            return rng.choice(HOSTILE_NUMBERS)
        if kind == "timestamp":
            return rng.choice(HOSTILE_TIMES)
        if kind == "blob":
            return rng.choice(["!!!not base64", "", HUGE, 5])
        if kind == "boolean":
            return rng.choice(["true", 1, None, True])
        return rng.choice(WRONG)

    def nearly_valid(self, shape: Shape) -> dict[str, Any]:
        """A valid-looking request with one leaf replaced by a type-correct extreme value."""
        body = self.valid(shape)
        leaves = list(_leaves(body, shape))
        if leaves:
            parent, key, leaf_shape = self.rng.choice(leaves)
            parent[key] = self._extreme(leaf_shape)
        return body

    def _extreme(self, shape: Shape) -> Any:
        kind = shape.type_name
        if kind in ("integer", "long"):
            return self.rng.choice([2**63, 2**64 + 1, -(2**63) - 1, 10**30, -1])
        if kind in ("float", "double"):
            return self.rng.choice([1e308, -1e308, 1e-320, 2**64])
        if kind == "timestamp":
            return self.rng.choice([253402300799, -62135596800, 1e308, 32503680000.5])
        if kind == "string":
            return self.rng.choice(["\x00", "\u202e\U0001f600", "a%_\\*", "' OR 1=1 --", "\ud800", HUGE, "x.\u00e9"])
        if kind == "list":
            return [self.valid(shape.member)] * 2_000
        return self.valid(shape)


def _leaves(value: Any, shape: Shape) -> Iterator[tuple[Any, Any, Shape]]:
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            member = shape.members[name]
            if member.type_name in ("structure", "list", "map"):
                yield from _leaves(item, member)
            else:
                yield value, name, member
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            if shape.member.type_name in ("structure", "list", "map"):
                yield from _leaves(item, shape.member)
            else:
                yield value, i, shape.member


def signed(creds: Credentials, signing_name: str, method: str, path: str, headers: dict[str, str],
           body: bytes) -> dict[str, str]:
    req = AWSRequest(method, HOST + path, data=body, headers=headers)
    SigV4Auth(creds, signing_name, "us-east-1").add_auth(req)
    return dict(req.headers.items())


RAW_JSON_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"this is not json"),
    ("invalid utf-8", b'{"a": "\xff\xfe"}'),
    ("top-level list", b"[1, 2, 3]"),
    ("top-level string", b'"x"'),
    ("null", b"null"),
    ("deeply nested arrays", b"[" * 200_000 + b"]" * 200_000),
    ("deeply nested objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("NaN literal", b'{"a": NaN}'),
    ("huge number", b'{"a": ' + b"9" * 5_000 + b"}"),
    ("lone surrogate", b'{"a": "\\ud800"}'),
    ("truncated", b'{"a": [1, 2'),
    ("duplicate keys", b'{"a": 1, "a": 2}'),
]
RAW_CBOR_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not cbor", b"\xff\xff\xff"),
    ("truncated map", b"\xa2\x61a"),
    ("top-level list", cbor2.dumps([1, 2])),
    ("deeply nested arrays", b"\x81" * 200_000 + b"\x00"),
    ("deeply nested maps", b"\xa1\x61a" * 50_000 + b"\x00"),
    ("huge declared byte string", b"\xa1\x61a\x5b\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ("huge declared array", b"\xa1\x61a\x9b\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ("invalid utf-8 text", b"\xa1\x61a\x62\xff\xfe"),
    ("epoch tag overflow", b"\xa1\x61a\xc1\xfb\x7f\xef\xff\xff\xff\xff\xff\xff"),
    ("epoch tag NaN", b"\xa1\x61a\xc1\xf9\x7e\x00"),
    ("bignum", b"\xa1\x61a\xc2\x58\x40" + b"\xff" * 64),
    ("regex tag", b"\xa1\x61a\xd8\x23\x61("),
    ("non-string keys", cbor2.dumps({1: 2, b"k": [3]})),
    ("undefined", b"\xa1\x61a\xf7"),
]


class ProbeBuilder:
    """Probes for one service, in whichever protocols the platform answers it in."""

    def __init__(self, model: ServiceModel, creds: Credentials, seed: int,
                 implemented: Callable[[str], bool] = lambda name: False) -> None:
        self.model = model
        self.implemented = implemented
        self.creds = creds
        self.rng = random.Random(f"{seed}:{model.service_name}")
        self.values = ValueMaker(self.rng)

    def _repeats(self, op: OperationModel) -> int:
        return NEARLY_VALID_IMPLEMENTED if self.implemented(op.name) else 1

    def _sign(self, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        return signed(self.creds, self.model.signing_name, method, path, headers, body)

    def json_probes(self, op: OperationModel, json_version: str) -> Iterator[Probe]:
        target = f"{self.model.metadata['targetPrefix']}.{op.name}"
        headers = {"X-Amz-Target": target, "Content-Type": f"application/x-amz-json-{json_version}"}
        if "awsQueryCompatible" in self.model.metadata:
            headers["x-amzn-query-mode"] = "true"
        shape = op.input_shape
        bodies: list[tuple[str, bytes]] = []
        if shape is not None:
            bodies.append(("hostile members", _json(self.values.hostile(shape))))
            bodies += [("nearly valid", _json(self.values.nearly_valid(shape))) for _ in range(self._repeats(op))]
        label, raw = self.rng.choice(RAW_JSON_BODIES)
        bodies.append((label, raw))
        for label, body in bodies:
            yield Probe(f"{self.model.service_name} {op.name} json ({label})", "POST", "/",
                        self._sign("POST", "/", headers, body), body)

    def cbor_probes(self, op: OperationModel) -> Iterator[Probe]:
        path = f"/service/{self.model.metadata['targetPrefix']}/operation/{op.name}"
        headers = {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor",
                   "Accept": "application/cbor"}
        shape = op.input_shape
        bodies: list[tuple[str, bytes]] = []
        if shape is not None:
            bodies.append(("hostile members", _cbor(self.values.hostile(shape))))
            bodies += [("nearly valid", _cbor(self.values.nearly_valid(shape))) for _ in range(self._repeats(op))]
        label, raw = self.rng.choice(RAW_CBOR_BODIES)
        bodies.append((label, raw))
        for label, body in bodies:
            yield Probe(f"{self.model.service_name} {op.name} cbor ({label})", "POST", path,
                        self._sign("POST", path, headers, body), body)

    def query_probes(self, op: OperationModel) -> Iterator[Probe]:
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        version = self.model.api_version
        shape = op.input_shape
        forms: list[tuple[str, bytes]] = []
        pairs: list[tuple[str, str]] = [("Action", op.name), ("Version", version)]
        if shape is not None:
            for name, member in shape.members.items():
                if self.rng.random() < 0.7:
                    value = self.values.hostile(member)
                    if isinstance(value, list):
                        pairs += [(f"{name}.member.{i}", _text(v)) for i, v in enumerate(value, start=1)]
                    elif isinstance(value, dict):
                        pairs += [(f"{name}.{k}", _text(v)) for k, v in value.items()]
                    else:
                        pairs.append((name, _text(value)))
        forms.append(("hostile members", urlencode(pairs, errors="surrogatepass").encode()))
        forms.append(("invalid utf-8", b"Action=" + op.name.encode() + b"&Version=" + version.encode()
                      + b"&X=%ff%fe&Y=\xff\xfe"))
        forms.append(("no action", b"Version=" + version.encode()))
        for label, body in forms:
            yield Probe(f"{self.model.service_name} {op.name} query ({label})", "POST", "/",
                        self._sign("POST", "/", headers, body), body)

    def rest_json_probes(self, op: OperationModel) -> Iterator[Probe]:
        shape = op.input_shape
        uri = op.http["requestUri"].split("?")[0]
        for label in ("hostile members", "nearly valid") * self._repeats(op):
            values = self.values.hostile(shape) if label == "hostile members" else self.values.nearly_valid(shape)
            if not isinstance(values, dict):
                values = {}
            path, headers, query = uri, {}, []
            for name, member in shape.members.items():
                loc = member.serialization.get("location")
                wire = member.serialization.get("name", name)
                value = values.get(name, self.rng.choice(HOSTILE_STRINGS[:8]))
                if loc == "uri":
                    path = path.replace("{" + wire + "}", quote(_text(value)[:300], safe="", errors="surrogatepass") or "x")
                elif loc == "header" and name in values:
                    headers[wire] = _text(value)[:2000].encode("ascii", "replace").decode()
                elif loc == "querystring" and name in values:
                    query.append((wire, _text(value)))
            body = self.rng.choice([b"", b"\xff\xfe\x00", HUGE.encode(), _json(values), b"[" * 100_000])
            full = path + ("?" + urlencode(query, errors="surrogatepass") if query else "")
            yield Probe(f"{self.model.service_name} {op.name} rest-json ({label})", op.http["method"], full,
                        self._sign(op.http["method"], full, headers, body), body)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _cbor(value: Any) -> bytes:
    try:
        return cbor2.dumps(value)
    except (ValueError, TypeError, UnicodeEncodeError, cbor2.CBOREncodeError):
        return cbor2.dumps(json.loads(json.dumps(value, allow_nan=True).replace("\\ud800", "x")))
