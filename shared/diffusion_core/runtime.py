"""Process-wide settings for model work that need no torch: the worker's parent process calls them too."""

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of returning them to the OS.

    Every denoising step allocates logits of tens of MB; by default each such block is a fresh
    mmap, and touching its pages costs more than the softmax over it. No-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim). keep_freed_memory makes reuse fast
    under steady load; call this when the work stops, so one large request's peak is not kept forever."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def quiet_transformers() -> None:
    """Keep transformers' load-time progress bars and advice out of a user's terminal."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
