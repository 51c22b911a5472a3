"""Exit 0 when every collection in requirements.yml is installed at its pinned version.

./play.sh uses this to take the collections from the pinned ``ansible`` bundle and to
fall back to ``ansible-galaxy collection install`` only when a version differs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        wanted = {c["name"]: str(c["version"]) for c in yaml.safe_load(handle)["collections"]}
    listing = subprocess.run(
        ["ansible-galaxy", "collection", "list", "--format", "json"], capture_output=True, text=True, check=False
    )
    found: dict[str, set[str]] = {}
    for collections in json.loads(listing.stdout or "{}").values():
        for name, info in collections.items():
            found.setdefault(name, set()).add(str(info.get("version")))
    missing = [f"{n}=={v}" for n, v in wanted.items() if v not in found.get(n, set())]
    if missing:
        print(f"play.sh: collections not at the pinned version: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
