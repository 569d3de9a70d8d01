"""Hypervisor drivers behind one interface: `qemu` (real) and `fake` (simulator)."""
