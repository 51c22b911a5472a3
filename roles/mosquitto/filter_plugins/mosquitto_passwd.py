"""The ``mosquitto_passwd`` filter: a Mosquitto 2 password-file hash, reproducibly.

``mosquitto_passwd`` salts at random, so the same password gives a different line on
every run and the play could never report changed=0. This filter writes the same format
(``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``, 12-byte salt, 64-byte key,
as mosquitto's src/password_mosq.c and apps/mosquitto_passwd do) with a salt derived from
the host (its machine-id), the user and the password: stable across runs, different per
host and user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ITERATIONS = 101  # mosquitto_passwd's default for $7$


def mosquitto_passwd(password: str, username: str, host_seed: str, iterations: int = ITERATIONS) -> str:
    """The hash part of a password-file line for ``username:password`` on the host ``host_seed``."""
    salt = hmac.new(host_seed.encode(), f"{username}\0{password}".encode(), hashlib.sha512).digest()[:12]
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"mosquitto_passwd": mosquitto_passwd}
