"""Ferry: host maintenance for QEMU/KVM clouds."""

__version__ = "0.1.0"
