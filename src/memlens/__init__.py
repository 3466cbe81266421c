# SPDX-License-Identifier: GPL-2.0-only
"""memlens: Linux memory observability with eBPF."""
__version__ = "0.1.0"
