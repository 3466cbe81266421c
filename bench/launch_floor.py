# SPDX-License-Identifier: GPL-2.0-only
"""The least a Python tool can take to attach: this interpreter, ctypes and libbpf opening,
loading and attaching a one-instruction tracepoint program (bench/floor.bpf.c), then "READY"
on stderr.  No argument parsing, no CO-RE, no maps: what any tool written in Python pays
before its own work.  bench_launch runs it beside bpftrace with an empty action on the
same tracepoint, so the distance between a memlens tool and this floor is memlens's own.

    python bench/launch_floor.py OBJECT.bpf.o      (root; attached until SIGINT)
"""
import ctypes
import sys
import time

lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
lib.bpf_object__open_file.restype = ctypes.c_void_p
lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lib.bpf_object__load.argtypes = [ctypes.c_void_p]
lib.bpf_object__next_program.restype = ctypes.c_void_p
lib.bpf_object__next_program.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
lib.bpf_program__attach.restype = ctypes.c_void_p
lib.bpf_program__attach.argtypes = [ctypes.c_void_p]

obj = lib.bpf_object__open_file(sys.argv[1].encode(), None)
if not obj or lib.bpf_object__load(obj) != 0:
    sys.exit(f"launch_floor: cannot load {sys.argv[1]}")
if not lib.bpf_program__attach(lib.bpf_object__next_program(obj, None)):
    sys.exit("launch_floor: cannot attach")
sys.stderr.write("READY\n")
sys.stderr.flush()
try:
    time.sleep(3600)  # attached until the bench's SIGINT
except KeyboardInterrupt:
    pass
