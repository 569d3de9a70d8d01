"""`ferry image create|list|show|delete` and `ferry instance create --image` against a live
controller, with real image files made by qemu-img."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.cli.live import Cli, LiveController, json_of, rows

HEARTBEAT_INTERVAL = 120  # hosts registered once stay up: nothing heartbeats for them here
MIB = 1 << 20


def _qcow2(path: Path, size: str = "16M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def test_image_create_list_show_delete(
    cli: Cli, controller: LiveController, tmp_path: Path
) -> None:
    assert cli("image", "list").stdout.strip() == "no images"
    disk = _qcow2(tmp_path / "debian.qcow2")
    data = disk.read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    made = cli("image", "create", "debian", "--file", str(disk)).stdout.strip()
    assert made == (
        f"image debian created: qcow2, {len(data) / 1024:.1f} KiB (virtual 16.0 MiB),"
        f" sha256 {digest}"
    )
    shown = json_of(cli, "image", "show", "debian")
    assert (shown["format"], shown["size_bytes"], shown["virtual_size_bytes"]) == (
        "qcow2",
        len(data),
        16 * MIB,
    )
    assert shown["sha256"] == digest and shown["created_by"] == "admin"
    assert (controller.state_dir / "images" / shown["id"]).read_bytes() == data

    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(MIB))  # no qcow2 magic: raw, detected
    assert json_of(cli, "image", "create", "blank", "--file", str(blank))["format"] == "raw"

    listed = rows(cli("image", "list").stdout)
    assert listed[0] == ["NAME", "FORMAT", "SIZE", "VIRTUAL", "SHA256", "CREATED"]
    assert [row[:2] for row in listed[1:]] == [["blank", "raw"], ["debian", "qcow2"]]
    assert listed[2][6] == digest[:12]
    assert [i["name"] for i in json_of(cli, "image", "list")] == ["blank", "debian"]
    fields = dict(
        line.split(None, 1) for line in cli("image", "show", "debian").stdout.splitlines()
    )
    assert fields["sha256"] == digest and fields["format"] == "qcow2"
    assert fields["virtual"] == f"16.0 MiB ({16 * MIB} bytes)"

    assert cli("image", "delete", "blank").stdout.strip() == "image blank deleted"
    assert [i["name"] for i in json_of(cli, "image", "list")] == ["debian"]
    assert "no image named 'blank' (HTTP 404)" in cli.fails("image", "show", "blank")


def test_image_errors(cli: Cli, tmp_path: Path) -> None:
    text = tmp_path / "notes.qcow2"
    text.write_text("not a disk image\n")
    wrong = cli.fails("image", "create", "notes", "--file", str(text), "--format", "qcow2")
    assert wrong.startswith("error: the file is not a qcow2 image: "), wrong
    assert wrong.endswith("(HTTP 422)")
    disk = _qcow2(tmp_path / "disk.qcow2")
    as_raw = cli.fails("image", "create", "disk", "--file", str(disk), "--format", "raw")
    assert as_raw == (
        "error: the file is a qcow2 image, not raw: upload it with format=qcow2 (HTTP 422)"
    )
    missing = cli.fails("image", "create", "gone", "--file", str(tmp_path / "nope.qcow2"))
    assert missing == f"error: cannot read {tmp_path / 'nope.qcow2'}: No such file or directory"
    assert json_of(cli, "image", "list") == []
    assert "HTTP 422" in cli.fails("image", "create", "Bad_Name", "--file", str(disk))


def test_instance_from_an_image(cli: Cli, hosts: list[str], tmp_path: Path) -> None:
    cli("flavor", "create", "m1", "--vcpus", "1", "--ram-mb", "256")
    cli("network", "create", "default", "--cidr", "198.19.0.0/24")
    cli("image", "create", "debian", "--file", str(_qcow2(tmp_path / "disk.qcow2")))
    vm = json_of(cli, "instance", "create", "vm1", "--flavor", "m1", "--image", "debian")
    assert vm["image"] == "debian"
    shown = dict(line.split(None, 1) for line in cli("instance", "show", "vm1").stdout.splitlines())
    assert shown["image"] == "debian"
    in_use = cli.fails("image", "delete", "debian")
    assert in_use == (
        "error: image 'debian' is in use by instance(s) vm1: delete them first (HTTP 409)"
    )
    cli("instance", "delete", "vm1", "--wait", "--timeout", "30")
    assert cli("image", "delete", "debian").stdout.strip() == "image debian deleted"
