"""``sunbox-stack-influxd <workdir> <port>``: run the test stack's InfluxDB in the foreground
(for the demo). It sets up the org ``sunbox``, writes the operator token to
``<workdir>/operator-token`` (0600) and stops on SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from .provision import StackError
from .servers import InfluxDB


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: sunbox-stack-influxd <workdir> <port>", file=sys.stderr)
        return 2
    workdir, port = Path(sys.argv[1]), int(sys.argv[2])
    server = InfluxDB("influxd", port, workdir)
    try:
        server.start()
    except StackError as exc:
        print(f"influxd: {exc}", file=sys.stderr)
        return 1
    token = workdir / "operator-token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(server.token)
    print(f"influxd ready on {server.url}", flush=True)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
