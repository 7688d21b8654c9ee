#!/usr/bin/env python3
"""Verifies a wxauth JWT the way a Python service would: PyJWT with PyJWKClient.

    verify_jwt.py JWKS_URL TOKEN ISSUER AUDIENCE

Fetches the key set from JWKS_URL, picks the key by the token's kid, checks the signature,
issuer, audience and expiry, and prints the claims as JSON. Exits 1 when the token is refused
(the reason on stderr), 2 on a usage error.
"""

import json
import sys

import jwt

# The algorithms wxauth signs with; a token naming any other is refused.
ALGORITHMS = ["EdDSA", "ES256"]


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    jwks_url, token, issuer, audience = argv[1:]
    try:
        key = jwt.PyJWKClient(jwks_url, cache_keys=True).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            audience=audience,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as err:
        print(f"rejected: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
