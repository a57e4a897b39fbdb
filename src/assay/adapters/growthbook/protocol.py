"""GrowthBook's SDK protocol, answered from the engine's snapshot: what an SDK connection's
public client key may ask (docs/sdk.md).

- ``GET /api/features/{clientKey}``: the project's payload (``payload.sdk_payload``),
  encoded once per (snapshot version, connection) and kept as bytes with its ``ETag`` and
  headers, so a request costs a dictionary lookup and a send. Encrypted connections get
  ``encryptedFeatures``/``encryptedSavedGroups`` (GrowthBook's AES-128-CBC,
  ``base64(iv).base64(ciphertext)``, PKCS7). A remote-evaluation connection's payload
  holds no features at all: its rules stay on the server.
- ``POST /api/eval/{clientKey}``: one subject's attributes in, every flag of the project
  decided by ``engine.adecide_many`` (remote-only flags included), answered as GrowthBook's
  proxy answers remote evaluation: each feature reduced to ``defaultValue``, and for an
  experiment assignment a ``force`` rule whose ``tracks`` carry the experiment and result
  the SDK reports to its tracking callback.
- ``POST /api/events/{clientKey}``: exposures only, recorded as the events API records
  them, when the connection allows it.

Rules kept: an unknown, revoked or malformed client key gets one and the same 404 (body
and headers), so nothing tells whether a key ever existed; a client key is never an API
key (bearer keys start with ``assay_``, client keys with ``sdk-``), so it opens nothing
else. Every answer carries CORS headers (``Access-Control-Allow-Origin: *``): these
routes are meant for browsers, and carry no credentials.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from assay.adapters.growthbook.payload import payload_document, sdk_payload
from assay.engine import ApiKey, PermissionDenied, Role
from assay.engine._errors import NotFound
from assay.engine._events import EventsRecorded, Exposure

if TYPE_CHECKING:
    from assay.engine import Decision, Engine, SdkConnection

FEATURES = "/api/features/"
EVAL = "/api/eval/"
EVENTS = "/api/events/"
PREFIXES = (FEATURES, EVAL, EVENTS)

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]

_encode = msgspec.json.Encoder().encode

CORS: Headers = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"ETag, X-SSE-Support"),
]
PREFLIGHT: Headers = [
    *CORS,
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, If-None-Match, Cache-Control"),
    (b"access-control-max-age", b"86400"),
]
_JSON = (b"content-type", b"application/json")
CACHE_CONTROL = b"public, max-age=0, must-revalidate"
"""Caches may keep a payload but must ask again (with ``If-None-Match``) before using it:
a change must reach the next request."""

NOT_FOUND_BODY = (
    _encode(
        {
            "error": {
                "code": "client_key_not_found",
                "message": "no active SDK connection has this client key",
            }
        }
    )
    + b"\n"
)
NOT_FOUND: Answer = (
    404,
    [_JSON, (b"content-length", b"%d" % len(NOT_FOUND_BODY)), *CORS],
    NOT_FOUND_BODY,
)


class EvalRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What GrowthBook's SDKs post for remote evaluation. Unknown fields are ignored, as
    GrowthBook's proxy ignores them (newer SDKs send more)."""

    attributes: dict[str, Any] = {}
    forcedVariations: dict[str, int] = {}
    forcedFeatures: list[tuple[str, Any]] = []
    url: str = ""


class ExposureBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The events API's batch, exposures only."""

    events: list[Exposure]


def encrypt(plain: bytes, key: str) -> str:
    """GrowthBook's payload encryption: AES-128-CBC with a random IV and PKCS7 padding,
    written ``base64(iv) + "." + base64(ciphertext)``."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(base64.b64decode(key)), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return f"{base64.b64encode(iv).decode()}.{base64.b64encode(ciphertext).decode()}"


@dataclass(frozen=True, slots=True)
class Encoded:
    """One connection's payload for one snapshot, ready to send."""

    etag: bytes
    ok: Answer
    not_modified: Answer


def client_key_of(path: str, prefix: str) -> str:
    return path[len(prefix) :]


class SdkProtocol:
    """The answers of the protocol's routes for one engine (one per server process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._version = -1
        self._encoded: dict[str, Encoded] = {}
        """By client key, for snapshot ``_version``: bounded by the active connections."""

    def connection(self, client_key: str) -> SdkConnection | None:
        return self._engine.snapshot.sdk_connections.get(client_key)

    # --- GET /api/features/{clientKey} ------------------------------------------------

    def features(self, client_key: str, if_none_match: bytes | None) -> Answer:
        snapshot = self._engine.snapshot
        if snapshot.version != self._version:
            self._version = snapshot.version
            self._encoded = {}
        encoded = self._encoded.get(client_key)
        if encoded is None:
            connection = snapshot.sdk_connections.get(client_key)
            if connection is None:
                return NOT_FOUND
            encoded = self._encoded[client_key] = self._encode(connection)
        if if_none_match is not None and _matches(if_none_match, encoded.etag):
            return encoded.not_modified
        return encoded.ok

    def _encode(self, connection: SdkConnection) -> Encoded:
        snapshot = self._engine.snapshot
        project = snapshot.projects[connection.project_id].key
        payload = sdk_payload(self._engine, project)
        document = payload_document(payload)
        if connection.evaluation == "remote":
            # The rules stay on the server: an SDK of a remote connection asks /api/eval.
            document = {**document, "features": {}, "savedGroups": {}}
        plain = _encode(document)
        if connection.decryption_key is not None:
            key = connection.decryption_key
            document = {
                "status": 200,
                "experiments": [],
                "dateUpdated": document["dateUpdated"],
                "encryptedFeatures": encrypt(_encode(document["features"]), key),
                "encryptedSavedGroups": encrypt(_encode(document["savedGroups"]), key),
            }
        body = _encode(document) + b"\n"
        # From the plain content and the connection's revision, not the ciphertext (a new
        # IV per encoding) nor the process's snapshot number: every node serving the same
        # configuration names it alike, so a 304 holds behind a load balancer too.
        digest = hashlib.sha256(
            plain + b"\0%s\0%d" % (connection.id.encode(), connection.revision)
        ).hexdigest()[:32]
        etag = b'"' + digest.encode() + b'"'
        # GrowthBook's JavaScript SDK opens GET /sub/{clientKey} only when told it may.
        common = [
            (b"etag", etag),
            (b"cache-control", CACHE_CONTROL),
            (b"x-sse-support", b"enabled"),
            *CORS,
        ]
        return Encoded(
            etag=etag,
            ok=(200, [_JSON, (b"content-length", b"%d" % len(body)), *common], body),
            not_modified=(304, common, b""),
        )

    # --- POST /api/eval/{clientKey} ---------------------------------------------------

    async def evaluate(self, connection: SdkConnection, request: EvalRequest) -> dict[str, Any]:
        """Every flag of the connection's project for one subject, as GrowthBook's proxy
        answers remote evaluation."""
        engine = self._engine
        snapshot = engine.snapshot
        project_id = connection.project_id
        attributes = request.attributes
        raw_id = attributes.get("id")
        subject = raw_id if isinstance(raw_id, str) else "" if raw_id is None else str(raw_id)
        forced = dict(request.forcedFeatures)
        flags = [k for k in snapshot.project_flags.get(project_id, {}) if k not in forced]
        decisions = await engine.adecide_many(
            [(flag, subject, attributes) for flag in flags], project_id=project_id
        )
        features: dict[str, Any] = {k: {"defaultValue": v} for k, v in forced.items()}
        for d in decisions:
            features[d.flag] = self._feature(project_id, d, attributes)
        project = snapshot.projects[project_id].key
        date_updated = sdk_payload(engine, project).date_updated
        return {
            "status": 200,
            "features": features,
            "experiments": [],
            "dateUpdated": date_updated,
        }

    def _feature(self, project_id: str, d: Decision, attributes: Mapping[str, Any]) -> Any:
        feature: dict[str, Any] = {"defaultValue": d.value}
        if not d.in_experiment or d.experiment is None or d.variant is None:
            return feature
        compiled = self._engine.snapshot.compiled_experiments.get((project_id, d.experiment))
        if compiled is None or d.variant not in compiled.variant_keys:
            return feature
        index = compiled.variant_keys.index(d.variant)
        attribute = compiled.hash_attribute
        hash_value = attributes.get(attribute)
        # The experiment as the SDK's tracking callback sees it, the other variations'
        # values scrubbed (as GrowthBook's proxy does): only this subject's is revealed.
        variations = [d.value if i == index else {} for i in range(len(compiled.variant_keys))]
        feature["rules"] = [
            {
                "force": d.value,
                "tracks": [
                    {
                        "experiment": {
                            "key": d.experiment,
                            "variations": variations,
                            "hashAttribute": attribute,
                            "meta": [{"key": k} for k in compiled.variant_keys],
                        },
                        "result": {
                            "inExperiment": True,
                            "variationId": index,
                            "value": d.value,
                            "hashUsed": True,
                            "hashAttribute": attribute,
                            "hashValue": "" if hash_value is None else str(hash_value),
                            "featureId": d.flag,
                            "key": d.variant,
                        },
                    }
                ],
            }
        ]
        return feature

    # --- POST /api/events/{clientKey} -------------------------------------------------

    async def record(self, connection: SdkConnection, batch: ExposureBatch) -> EventsRecorded:
        if not connection.allow_exposures:
            raise PermissionDenied(
                "this SDK connection does not accept exposures", code="exposures_not_allowed"
            )
        engine = self._engine
        project = engine.snapshot.projects.get(connection.project_id)
        if project is None:  # pragma: no cover - a connection's project is never deleted
            raise NotFound("client key not found", code="client_key_not_found")
        return await engine.record_events(
            project.key, batch.events, principal=_principal(connection)
        )


def _principal(connection: SdkConnection) -> ApiKey:
    """Who the events API sees: an SDK role scoped to the connection's project."""
    return ApiKey(
        id=connection.id,
        name=connection.name,
        role=Role.SDK,
        project_id=connection.project_id,
        prefix="",
        secret_hash="",
        created_at=connection.created_at,
    )


def _matches(header: bytes, etag: bytes) -> bool:
    """``If-None-Match``: ``*``, or a list of tags, weak ones compared weakly (RFC 9110)."""
    if header.strip() == b"*":
        return True
    return any(t.strip().removeprefix(b"W/") == etag for t in header.split(b","))


BodyReader = Callable[[], Awaitable[bytes]]
