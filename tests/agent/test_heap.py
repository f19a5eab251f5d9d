"""release_free_memory on the real glibc: freed heap pages go back to the system."""

import subprocess
import sys
import textwrap

# In a fresh interpreter: 256 MiB in 64 KiB blocks (below glibc's mmap
# threshold, so they come from the heap), all freed but the last, which pins
# the heap's top so that free() alone cannot shrink it.
_FRAGMENTED_HEAP = """
    import os
    from podflame.agent.heap import release_free_memory

    def rss_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    blocks = [bytearray(b"x" * 65536) for _ in range(4096)]
    last = blocks[-1]
    del blocks
    before = rss_mib()
    release_free_memory()
    print(before, rss_mib())
"""


def test_freed_heap_memory_is_returned() -> None:
    code = textwrap.dedent(_FRAGMENTED_HEAP)
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    before, after = map(float, output.split())
    assert before > 256, before  # the freed blocks were still resident
    assert before - after > 200, (before, after)
