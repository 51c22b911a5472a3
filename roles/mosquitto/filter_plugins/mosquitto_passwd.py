"""The ``mosquitto_passwd`` filter: a Mosquitto 2 password-file hash with a random salt,
kept while it still matches.

The format is mosquitto's ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``
with a 12-byte salt and a 64-byte key (mosquitto's src/password_mosq.c and
apps/mosquitto_passwd). The salt is random (``secrets.token_bytes``), as
``mosquitto_passwd`` makes it, so nothing about a hash can be derived from the host. For
the play to report changed=0, the hash already in the host's password file is returned
unchanged when it still verifies the password; a new or changed password gets a new salt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

ITERATIONS = 101  # mosquitto_passwd's default for $7$
SALT_BYTES = 12
KEY_BYTES = 64


def _verifies(hashed: str, password: str) -> bool:
    """Whether a ``$7$`` hash is of this password (anything else: False)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    iterations = int(parts[2])
    if not salt or len(key) != KEY_BYTES or not 1 <= iterations <= 10_000_000:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, KEY_BYTES), key)


def mosquitto_passwd(password: str, username: str, existing: str = "", iterations: int = ITERATIONS) -> str:
    """The hash part of a password-file line for ``username:password``.

    Args:
        password: the account's password.
        username: its user name.
        existing: the host's current password file (empty when there is none); its line
            for ``username`` is reused when it verifies ``password``.
        iterations: PBKDF2 iterations for a new hash.
    """
    for line in existing.splitlines():
        name, sep, hashed = line.strip().partition(":")
        if sep and name == username and _verifies(hashed, password):
            return hashed
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, KEY_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"mosquitto_passwd": mosquitto_passwd}
