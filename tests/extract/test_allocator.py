"""glibc malloc tuning of the extraction process (extract.allocator)."""

import ctypes
import subprocess
import sys
import textwrap

from slidemil.extract import allocator


def test_tune_glibc_malloc_reuses_large_blocks():
    # In a fresh process: after tuning, a freed 64 MiB block stays in the heap (mallinfo2's arena grows past it)
    # instead of being an mmap that is returned at once.
    code = textwrap.dedent("""
        import ctypes, ctypes.util
        from slidemil.extract.allocator import tune_glibc_malloc
        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = Info
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        def mapped_and_kept(size=64 * 2**20):
            p = libc.malloc(size)
            ctypes.memset(p, 1, size)
            during = libc.mallinfo2().hblkhd
            libc.free(p)
            return during >= size, libc.mallinfo2().fordblks >= size
        before = mapped_and_kept()
        ok = tune_glibc_malloc()
        print(ok, before, mapped_and_kept())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    # default glibc: a 64 MiB block is mmapped and nothing is kept after free; tuned: heap, kept for reuse
    assert out == "True (True, False) (False, True)"


def test_tune_is_a_no_op_without_glibc(monkeypatch):
    def no_libc(name):
        raise OSError("no C library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert allocator.tune_glibc_malloc() is False
