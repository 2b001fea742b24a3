"""What every PyTorch peer does before torch is imported (import this module first).

Debian's torch 1.13 does its fp32 GEMMs in OpenBLAS (pthreads build), whose thread pool ignores
torch.set_num_threads(); it reads OPENBLAS_NUM_THREADS when the library loads, so the thread count
(--threads T on the command line) is pinned here. With tuned (the peers' --tuned; always for
peer_torch_generate.py):
  (1) libgomp's spinning workers and OpenBLAS's pthread pool fight over the cores when both have
      more than one thread: OpenMP sleeps instead (OMP_WAIT_POLICY=PASSIVE);
  (2) glibc serves big blocks with mmap and returns them (munmap / heap trim) when freed, so every
      step page-faults its activations and gradients back in (about 10 us a fault on this VM): serve
      everything from the heap and never trim it (the mmap threshold cannot be raised past 32 MiB,
      and the 124M shape has 51-154 MiB temporaries).
"""
import os
import sys


def early_setup(tuned):
    n = "1"
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            n = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            n = arg.split("=", 1)[1]
    os.environ.setdefault("OPENBLAS_NUM_THREADS", n)
    os.environ.setdefault("OMP_NUM_THREADS", n)
    if tuned:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
        ok = (libc.mallopt(M_MMAP_MAX, 0),
              libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1),
              libc.mallopt(M_TOP_PAD, 256 << 20))
        assert all(ok), ok
