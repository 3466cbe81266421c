# SPDX-License-Identifier: GPL-2.0-only
"""Output formats, one module per format: table, hist, ndjson, folded, pprof, flamegraph."""
