"""Short-lived access tokens (JWT), pinned to HS256 with a key file of at least 32 random bytes.

What a token must satisfy to be accepted (RFC 8725):

- header exactly ``{"alg": "HS256", "typ": "at+jwt"}``: ``none``, any other algorithm, HS/RS key
  confusion, and headers that point elsewhere (``kid``, ``jku``, ``x5u``, ``crit``) are refused;
- a valid HMAC under the daemon's key;
- claims ``exp iat iss aud sub jti`` present and well typed, ``iss``/``aud`` equal to this
  daemon's (a list audience is refused), ``exp`` not passed and ``iat`` not in the future beyond
  a few seconds of leeway, and a lifetime no longer than the configured one;
- ``jti`` not revoked; the caller then checks that ``key_id`` still names an active key whose
  name is ``sub``, which is how revoking a key revokes its tokens.

Expiry is checked here against an injectable clock rather than inside PyJWT, so tests can freeze
time.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import jwt
import msgspec

from kdf_remote.daemon.security.errors import CredentialError, SecurityConfigError
from kdf_remote.daemon.security.files import read_private_file, write_private_file
from kdf_remote.daemon.security.keystore import KeyRecord

__all__ = [
    "JWT_ALGORITHM",
    "MIN_KEY_BYTES",
    "TOKEN_TYPE",
    "IssuedToken",
    "RevokedTokens",
    "TokenClaims",
    "TokenPolicy",
    "TokenService",
    "check_key_strength",
    "create_jwt_key_file",
    "generate_jwt_key",
    "load_jwt_key",
    "looks_like_jwt",
]

JWT_ALGORITHM: Final = "HS256"
TOKEN_TYPE: Final = "at+jwt"  # noqa: S105  # the RFC 9068 media type, not a secret
MIN_KEY_BYTES: Final = 32
"""RFC 7518 §3.2: an HS256 key at least as long as the hash."""
GENERATED_KEY_BYTES: Final = 64
MAX_TOKEN_LENGTH: Final = 4096
MAX_TTL: Final = 3600.0
MIN_TTL: Final = 10.0
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub", "jti")
VERIFIED_CACHE_SIZE: Final = 4096
_KEY_FIELD = "security.jwt.key_file"
_BASE64URL = re.compile(rb"^[A-Za-z0-9_-]+={0,2}$")
_JWT_SHAPE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------
# Key material


def generate_jwt_key() -> bytes:
    """64 random bytes (twice HS256's minimum)."""
    return secrets.token_bytes(GENERATED_KEY_BYTES)


def create_jwt_key_file(path: Path) -> bool:
    """Create the JWT key file (0600, base64url text) unless it exists; True when created."""
    text = base64.urlsafe_b64encode(generate_jwt_key()).rstrip(b"=") + b"\n"
    try:
        write_private_file(path, text, overwrite=False)
    except FileExistsError:
        return False
    return True


def check_key_strength(key: bytes, *, field: str = _KEY_FIELD, shown: str = "the key") -> None:
    """Refuse key material that is too short or visibly not random.

    Raises:
        SecurityConfigError: shorter than 32 bytes, or too few distinct byte values (a repeated
            pattern or a placeholder such as all zeros).
    """
    if len(key) < MIN_KEY_BYTES:
        raise SecurityConfigError(
            field, f"{shown} ({len(key)} bytes)", f"at least {MIN_KEY_BYTES} random bytes"
        )
    # 32 random bytes have ~30 distinct values; fewer than half is a pattern, not a key.
    if len(set(key)) < min(16, len(key) // 2):
        raise SecurityConfigError(
            field, f"{shown} (a repetitive byte pattern)", f"{MIN_KEY_BYTES}+ random bytes"
        )


def _is_binary(data: bytes) -> bool:
    """True for random key material rather than a phrase: control bytes, or not UTF-8 text."""
    if any((b < 0x20 and b not in b"\t\n\r") or b == 0x7F for b in data):
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def load_jwt_key(path: Path, *, field: str = _KEY_FIELD) -> bytes:
    """Read and check the JWT key file; the daemon must not start when this raises.

    Two forms are accepted: base64url text (``keys init``, ``init``) and raw random bytes (what
    the Pulumi bootstrap delivers). Other text, such as a passphrase, is refused: a human
    phrase is no HMAC key (RFC 8725 section 3.5).

    Raises:
        SecurityConfigError: missing, readable by others, a phrase rather than a key, or weak.
    """
    data = read_private_file(path, field=field, max_bytes=4096)
    text = data.strip()
    if text and _BASE64URL.match(text) is not None:
        try:
            key = base64.urlsafe_b64decode(text.rstrip(b"=") + b"=" * (-len(text.rstrip(b"=")) % 4))
        except (binascii.Error, ValueError):
            raise SecurityConfigError(field, str(path), "base64url key text") from None
    elif _is_binary(data):
        key = data
    else:
        raise SecurityConfigError(
            field,
            str(path),
            "base64url key text as written by `kdf-remote-daemon keys init`, or raw random bytes",
        )
    check_key_strength(key, field=field, shown=str(path))
    return key


def looks_like_jwt(credential: str) -> bool:
    """True for the three-part ``eyJ...`` shape of a JWT (an API key never has it)."""
    return _JWT_SHAPE.match(credential) is not None


# --------------------------------------------------------------------------------------------
# Revocation


class _Revoked(msgspec.Struct, frozen=True):
    jti: str
    exp: float


class _RevokedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    revoked: list[_Revoked]


class RevokedTokens:
    """Revoked ``jti`` values until their token would have expired anyway; persisted (0600).

    Args:
        path: where the list survives restarts, or None to keep it in memory only.
        wall_clock: Unix time.

    Raises:
        SecurityConfigError: the file exists but is unsafe or unreadable.
    """

    def __init__(self, path: Path | None, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._wall = wall_clock
        self._revoked: dict[str, float] = {}
        if path is not None and path.exists():
            field = "security.jwt (revoked tokens file)"
            raw = read_private_file(path, field=field, max_bytes=64 << 20)
            try:
                doc = msgspec.json.decode(raw, type=_RevokedFile)
            except msgspec.DecodeError:
                raise SecurityConfigError(field, str(path), "a revoked-tokens JSON file") from None
            self._revoked = {item.jti: item.exp for item in doc.revoked}
            self._prune()

    def __contains__(self, jti: object) -> bool:
        return isinstance(jti, str) and jti in self._revoked

    def __len__(self) -> int:
        return len(self._revoked)

    def _prune(self) -> None:
        now = self._wall()
        self._revoked = {j: exp for j, exp in self._revoked.items() if exp > now}

    def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse the token ``jti`` from now on (until ``expires_at``, after which it is dead)."""
        self._prune()
        self._revoked[jti] = expires_at
        if self._path is not None:
            doc = _RevokedFile(revoked=[_Revoked(j, e) for j, e in self._revoked.items()])
            write_private_file(self._path, msgspec.json.encode(doc))


# --------------------------------------------------------------------------------------------
# Issuing and verifying


class TokenPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Who issues tokens for whom, and for how long."""

    issuer: str
    audience: str
    ttl: float
    """Lifetime of an issued token, seconds."""
    leeway: float = 5.0
    """Clock skew tolerated on ``exp``/``iat``/``nbf``, seconds."""

    def validate(self) -> None:
        """Raises SecurityConfigError naming the bad setting."""
        if not MIN_TTL <= self.ttl <= MAX_TTL:
            raise SecurityConfigError(
                "security.jwt.ttl", self.ttl, f"between {MIN_TTL:g}s and {MAX_TTL:g}s"
            )
        if not self.issuer.strip():
            raise SecurityConfigError("security.jwt.issuer", self.issuer, "a non-empty name")
        if not self.audience.strip():
            raise SecurityConfigError("security.jwt.audience", self.audience, "a non-empty name")


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly minted access token."""

    access_token: str
    jti: str
    expires_in: int
    expires_at: float


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The checked claims of an accepted token."""

    subject: str
    key_id: str
    jti: str
    issued_at: int
    expires_at: int
    not_before: int | None = None


_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "invalid token signature"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
)


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CredentialError(f"token claim {name!r} is not an integer")
    return value


def _str_claim(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise CredentialError(f"token claim {name!r} is not a valid string")
    return value


class TokenService:
    """Issues and verifies access tokens.

    Args:
        key: the HS256 key (checked with :func:`check_key_strength`).
        policy: issuer, audience, lifetime.
        revoked: the revocation list.
        wall_clock: Unix time (injectable for tests).

    Raises:
        SecurityConfigError: weak key or bad policy.
    """

    def __init__(
        self,
        key: bytes,
        policy: TokenPolicy,
        revoked: RevokedTokens,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_key_strength(key)
        policy.validate()
        self._key = key
        self.policy = policy
        self.revoked = revoked
        self._wall = wall_clock
        # Tokens whose signature and static claims were already checked: a token is reused for
        # many requests, and HMAC plus JSON decoding is most of the cost of accepting one.
        # Only valid tokens get in, and time, revocation and key checks still run every time.
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()

    def issue(self, record: KeyRecord) -> IssuedToken:
        """Mint a token for the key ``record``; ``sub`` is its name, ``key_id`` its id."""
        now = int(self._wall())
        ttl = int(self.policy.ttl)
        if record.expires_at is not None:
            # A token never outlives the key that obtained it.
            ttl = max(0, min(ttl, int(record.expires_at) - now))
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self.policy.issuer,
            "aud": self.policy.audience,
            "sub": record.name,
            "key_id": record.key_id,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }
        token = jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM, headers={"typ": TOKEN_TYPE})
        return IssuedToken(access_token=token, jti=jti, expires_in=ttl, expires_at=float(now + ttl))

    def _decode(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_LENGTH or not looks_like_jwt(token):
            raise CredentialError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise CredentialError("malformed token") from None
        if header != {"alg": JWT_ALGORITHM, "typ": TOKEN_TYPE}:
            if header.get("alg") != JWT_ALGORITHM:
                raise CredentialError("token algorithm not allowed")
            raise CredentialError("unexpected token header")
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[JWT_ALGORITHM],
                audience=self.policy.audience,
                issuer=self.policy.issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                    # Time claims are checked below against the injectable clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise CredentialError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            for kind, reason in _ERRORS:
                if isinstance(exc, kind):
                    raise CredentialError(reason) from None
            raise CredentialError("malformed token") from None

    def _static_claims(self, token: str) -> TokenClaims:
        payload = self._decode(token)
        exp = _int_claim(payload, "exp")
        iat = _int_claim(payload, "iat")
        claims = TokenClaims(
            subject=_str_claim(payload, "sub"),
            key_id=_str_claim(payload, "key_id"),
            jti=_str_claim(payload, "jti"),
            issued_at=iat,
            expires_at=exp,
            not_before=_int_claim(payload, "nbf") if "nbf" in payload else None,
        )
        if exp <= iat or exp - iat > self.policy.ttl + self.policy.leeway:
            raise CredentialError("token lifetime not accepted")
        return claims

    def verify(self, token: str) -> TokenClaims:
        """Check ``token`` completely except for the key lookup (see the module docstring).

        Raises:
            CredentialError: with a short reason safe to return.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._static_claims(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        now = self._wall()
        leeway = self.policy.leeway
        if now >= claims.expires_at + leeway:
            self._verified.pop(token, None)
            raise CredentialError("token expired", guess=False)
        if claims.issued_at > now + leeway:
            raise CredentialError("token issued in the future", guess=False)
        if claims.not_before is not None and claims.not_before > now + leeway:
            raise CredentialError("token not yet valid", guess=False)
        if claims.jti in self.revoked:
            raise CredentialError("token revoked", guess=False)
        return claims

    def revoke(self, claims: TokenClaims) -> None:
        """Refuse the token with these claims from now on."""
        self.revoked.revoke(claims.jti, float(claims.expires_at) + self.policy.leeway)

    def revoke_jti(self, jti: str) -> None:
        """Refuse the token ``jti`` (its expiry unknown: kept for the longest lifetime)."""
        self.revoked.revoke(jti, self._wall() + self.policy.ttl + self.policy.leeway)
