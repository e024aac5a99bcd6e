"""Constants every layer shares: the architecture's (`abi.arch`) and Linux's user-visible ABI (`abi.linux`).

The bottom of the tree: it imports nothing of the project, and every layer
may import it, so a value such as PAGE_SIZE, -EFAULT or SIGSEGV is written once.
"""
