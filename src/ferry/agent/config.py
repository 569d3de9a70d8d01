"""Agent settings, from a TOML file (`ferry agent serve --config FILE`)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ferry.protocol import Address, HostName, Inventory, NetworkName


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca: Path = Field(description="the cluster CA certificate")
    cert: Path = Field(description="this host's certificate (server and client use)")
    key: Path
    controller_cert: Path = Field(description="the only client certificate the agent accepts")


# CPU models that expose the host's own CPU: a guest started with one can move only to an
# identical CPU, and QEMU refuses to migrate `host` guests at all. Hosts name a model instead.
UNMIGRATABLE_CPU_MODELS = frozenset({"host", "max"})


class QemuSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kernel: Path
    initrd: Path
    bridge: str = "br-inst"
    binary: str = "qemu-system-x86_64"
    accel: Literal["auto", "kvm", "tcg"] = Field(
        default="auto", description="auto: KVM when the probe runs a guest on it, else TCG"
    )
    cpu_model: str = Field(
        default="qemu64",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="a named CPU model, the same on every host a guest may move between",
    )
    machine_type: str = Field(default="pc-q35-7.2", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")

    @field_validator("cpu_model")
    @classmethod
    def _migratable(cls, value: str) -> str:
        if value in UNMIGRATABLE_CPU_MODELS:
            raise ValueError(
                f"{value!r} passes the host CPU through and cannot live-migrate; name a model "
                "every host of the cluster supports (qemu64, Haswell-noTSX, EPYC-Rome, ...)"
            )
        return value


class StorageSettings(BaseModel):
    """Where instance disks live. `local`: this host's own directory. `shared`: a directory
    every host of the pool mounts at the same path (NFS, CephFS, ...): a disk there is the same
    file on each of them, so a live migration moves RAM only."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "shared"] = "local"
    path: Path = Field(description="the instance disks' directory (one subdirectory each)")
    pool: str = Field(
        default="",
        pattern=r"^([a-z0-9][a-z0-9-]{0,62})?$",
        description="shared: the pool's name, the same on every host that mounts it",
    )
    image_cache: Path = Field(description="this host's verified copies of catalog images")

    @model_validator(mode="after")
    def _pool_named(self) -> StorageSettings:
        if self.kind == "shared" and not self.pool:
            raise ValueError("shared storage needs the pool's name (pool = ...)")
        if self.kind == "local" and self.pool:
            raise ValueError("pool is for shared storage only")
        return self


class DhcpSettings(BaseModel):
    """This host's DHCP server on an instance network (dnsmasq on the instance bridge): every
    host serves the fixed leases of every port of the network, so a guest renews its lease
    whichever host is down or drained."""

    model_config = ConfigDict(extra="forbid")

    network: NetworkName
    address: str = Field(
        pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$",
        description="ADDR/PREFIX of this host's DHCP server on the network's bridge",
    )
    lease_s: int = Field(default=3600, ge=120, le=86400)
    binary: str = "dnsmasq"
    release_binary: str = "dhcp_release"  # dnsmasq-utils: releases a deleted port's lease


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: HostName
    listen: str = Field(description="HOST:PORT of the agent's HTTPS API")
    management_address: Address
    migration_address: Address
    controller_url: str
    token_file: Path = Field(description="an agent-role API token, for registering")
    driver: Literal["qemu", "fake"] = "qemu"
    run_dir: Path
    networks: list[NetworkName] = Field(default_factory=list)
    inventory: Inventory | None = Field(
        default=None, description="what to offer; default: what the driver measures"
    )
    tls: TlsSettings
    qemu: QemuSettings | None = None
    storage: StorageSettings | None = Field(
        default=None, description="default: local, under run_dir (disks/, images/)"
    )
    dhcp: list[DhcpSettings] = Field(default_factory=list)

    @property
    def storage_settings(self) -> StorageSettings:
        return self.storage or StorageSettings(
            path=self.run_dir / "disks", image_cache=self.run_dir / "images"
        )

    @property
    def agent_url(self) -> str:
        return f"https://{self.listen}"


class AgentConfigError(Exception):
    pass


def load_agent_settings(path: Path) -> AgentSettings:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AgentConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        settings = AgentSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise AgentConfigError(f"{path}: {problems}") from exc
    if settings.driver == "qemu" and settings.qemu is None:
        raise AgentConfigError(f"{path}: the qemu driver needs a [qemu] section")
    return settings
