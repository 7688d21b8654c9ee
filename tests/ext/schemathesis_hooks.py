"""Schemathesis hooks for crates/server/tests/openapi.rs: real credentials for each operation,
by the security scheme its OpenAPI operation names.

- user_token: the access token of a user logged in through the WeChat simulator
  (POST /sim/login for a code, then POST /v1/auth/login). A token that stops working (the
  run logged it out or deleted its person) answers 401, and Schemathesis asks for a new one:
  a fresh user is logged in.
- admin_key: WXTEST_ADMIN_KEY, as a bearer token.
- service_credentials: WXTEST_SERVICE_NAME:WXTEST_SERVICE_SECRET, as HTTP Basic.

Settings come from the environment: WXTEST_WXAUTH_URL, WXTEST_SIM_URL, WXTEST_APP_ID and the
ones above. Loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks (this directory on PYTHONPATH).
"""

import base64
import itertools
import os

import requests
import schemathesis

WXAUTH = os.environ["WXTEST_WXAUTH_URL"]
SIM = os.environ["WXTEST_SIM_URL"]
APP_ID = os.environ["WXTEST_APP_ID"]
ADMIN_KEY = os.environ["WXTEST_ADMIN_KEY"]
SERVICE = base64.b64encode(
    f"{os.environ['WXTEST_SERVICE_NAME']}:{os.environ['WXTEST_SERVICE_SECRET']}".encode()
).decode()

_users = itertools.count()


def _log_in() -> str:
    user = f"fuzzed-user-{next(_users)}"
    code = requests.post(f"{SIM}/sim/login", json={"appid": APP_ID, "user": user}, timeout=10)
    code.raise_for_status()
    login = requests.post(f"{WXAUTH}/v1/auth/login", json={"code": code.json()["code"]}, timeout=10)
    login.raise_for_status()
    return login.json()["access_token"]


def _schemes(case) -> set:
    security = case.operation.definition.raw.get("security") or []
    return {name for requirement in security for name in requirement}


@schemathesis.auth(refresh_interval=600)
class Credentials:
    """One user's token at a time (a new one after a 401), the admin key, the service's."""

    def get(self, case, ctx):
        return _log_in()

    def set(self, case, data, ctx):
        schemes = _schemes(case)
        if case.headers is None:
            case.headers = {}
        if "user_token" in schemes:
            case.headers["Authorization"] = f"Bearer {data}"
        elif "admin_key" in schemes:
            case.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        elif "service_credentials" in schemes:
            case.headers["Authorization"] = f"Basic {SERVICE}"
