"""Linux images: the vmlinux ELF (symbols, relocations, BTF), the exception-table format, and a loaded image.

The layer between the machine (emu) and everything that runs Linux code on it:
kasm writes extable entries in this format, host consumes them, and the
real-kernel lab calls functions of a `LoadedKernel`.
"""
