"""The CLI prints what the API says, verbatim: rich's emoji codes must not rewrite a MAC such as
52:54:00:ab:87:29 (":ab:" is an emoji code)."""

from __future__ import annotations

from ferry.cli.output import console, table


def test_macs_print_as_they_are() -> None:
    mac = "52:54:00:ab:87:29"
    with console.capture() as captured:
        console.print(f"port {mac}")
        table([{"mac": mac}], [("MAC", lambda r: r["mac"])])
    assert captured.get().count(mac) == 2
