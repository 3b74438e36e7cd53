"""SIP digest authentication, server side (RFC 3261 §22, RFC 2617 with qop=auth, MD5 or SHA-256).

Nonces are stateless: ``<unix time>.<HMAC of it under a per-process secret>``, valid for
:data:`NONCE_TTL`. A stale nonce gets a fresh challenge with ``stale=true`` so that the client retries
without asking its user. Nonce counts are not tracked, so a captured Authorization can be replayed
within the TTL by someone who can also spoof the caller's address; put the bridge behind a trunk or an
allow-list (``--sip-allow``) where that matters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

NONCE_TTL = 300.0  # s a challenge's nonce stays valid
ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'\s*([A-Za-z0-9\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)\s*(?:,|$)')


def parse_credentials(value: str) -> dict[str, str] | None:
    """``Digest a="b", c=d`` → ``{"a": "b", "c": "d"}`` (names lower case); None if not Digest or junk."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        params[name] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
        pos = m.end()
    return params


class DigestAuthenticator:
    def __init__(self, realm: str, users: dict[str, str], algorithm: str = "MD5") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"digest algorithm is one of {sorted(ALGORITHMS)}")
        self.realm = realm
        self.users = dict(users)
        self.algorithm = algorithm
        self._secret = secrets.token_bytes(32)

    def challenge(self, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value for a 401."""
        stamp = str(int(time.time()))
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        value = f'Digest realm="{self.realm}", nonce="{stamp}.{mac}", algorithm={self.algorithm}, qop="auth"'
        return value + (", stale=true" if stale else "")

    def verify(self, method: str, authorization: str | None) -> tuple[bool, bool]:
        """(accepted, stale): whether ``authorization`` proves a known user's password for ``method``."""
        if authorization is None:
            return False, False
        p = parse_credentials(authorization)
        if p is None or p.get("realm") != self.realm:
            return False, False
        algorithm = p.get("algorithm", "MD5").upper()
        password = self.users.get(p.get("username", ""))
        if password is None or algorithm != self.algorithm or not {"nonce", "uri", "response"} <= p.keys():
            return False, False
        if not self._nonce_valid(p["nonce"]):
            return False, True
        h = ALGORITHMS[algorithm]

        def digest(text: str) -> str:
            return h(text.encode()).hexdigest()

        ha1 = digest(f"{p['username']}:{self.realm}:{password}")
        ha2 = digest(f"{method}:{p['uri']}")
        if "qop" in p:
            if p["qop"] != "auth" or "nc" not in p or "cnonce" not in p:
                return False, False
            expected = digest(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        else:
            expected = digest(f"{ha1}:{p['nonce']}:{ha2}")
        return hmac.compare_digest(expected, p["response"].lower()), False

    def _nonce_valid(self, nonce: str) -> bool:
        stamp, _, mac = nonce.partition(".")
        if not stamp.isdigit():
            return False
        good = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return hmac.compare_digest(good, mac) and time.time() - int(stamp) <= NONCE_TTL
