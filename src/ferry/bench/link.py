"""Raw TCP throughput between two lab hosts' namespaces: the baseline of a migration's time.

`python -m ferry.bench.link sink ADDR PORT` accepts one connection, reads until EOF and prints
{"bytes": N, "seconds": S} (first byte to last); `... source ADDR PORT MIB` sends MIB MiB.
"""

from __future__ import annotations

import json
import socket
import sys
import time

CHUNK = 1 << 20


def sink(address: str, port: int) -> dict[str, float]:
    with socket.create_server((address, port)) as server:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        conn, _ = server.accept()
        with conn:
            first = conn.recv(CHUNK)
            started, total = time.monotonic(), len(first)
            while data := conn.recv(CHUNK):
                total += len(data)
            return {"bytes": total, "seconds": time.monotonic() - started}


def source(address: str, port: int, mib: int) -> None:
    block = bytes(CHUNK)
    with socket.create_connection((address, port), timeout=30) as conn:
        for _ in range(mib):
            conn.sendall(block)


def main(argv: list[str]) -> None:
    if argv[:1] == ["sink"]:
        sys.stdout.write(json.dumps(sink(argv[1], int(argv[2]))) + "\n")
    elif argv[:1] == ["source"]:
        source(argv[1], int(argv[2]), int(argv[3]))
    else:
        sys.exit("usage: python -m ferry.bench.link sink ADDR PORT | source ADDR PORT MIB")


if __name__ == "__main__":
    main(sys.argv[1:])
