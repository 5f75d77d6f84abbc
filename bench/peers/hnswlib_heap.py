# hnswlib's heap in use, to set beside `cargo xtask bench libraries`'s
# hnsw_memory_siftsmall (the bytes the hnsw component's graph holds).
#
# The peer script's "RSS delta" depends on what the allocator already held
# (it reads 10.3, 6.5 and 0.0 MB in one run), and its saved-index size is
# the index at rest (compare it with hnsw_snapshot_siftsmall). This reads
# glibc's own count of bytes allocated (mallinfo2: in-use heap plus mmapped
# blocks) before and after building the same index as the peer script
# (siftsmall, M=16, ef_construction=200, L2, one thread) and one query.
#
# Usage: target/peers/bin/python3 bench/peers/hnswlib_heap.py [siftsmall dir]
# (the venv of ../shared/tools/README.md: numpy, hnswlib).
import ctypes, gc, os, sys

import hnswlib
import numpy as np


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def allocated():
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


here = os.path.dirname(os.path.abspath(__file__))
sift = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "..", "shared", "data", "siftsmall")
raw = np.fromfile(os.path.join(sift, "siftsmall_base.fvecs"), dtype=np.int32)
base = raw.reshape(-1, raw[0] + 1)[:, 1:].copy().view(np.float32)
ids = np.arange(len(base))
gc.collect()
before = allocated()
index = hnswlib.Index(space="l2", dim=base.shape[1])
index.init_index(max_elements=len(base), ef_construction=200, M=16, random_seed=100)
index.set_num_threads(1)
gc.collect()
initialised = allocated()
index.add_items(base, ids, num_threads=1)
index.set_ef(32)
index.knn_query(base[:1], k=10, num_threads=1)
gc.collect()
after = allocated()
print(f"hnswlib heap in use: {(after - before) / 1e6:.3f} MB "
      f"({(initialised - before) / 1e6:.3f} MB of it allocated by init_index) for {len(base)} x {base.shape[1]} f32")
