"""gdb attach: a small Remote Serial Protocol stub over the `Machine` (`faultlab run|kernel call --gdb`).

rsp.py frames packets; stub.py answers them from the stopped machine;
control.py decides where it stops (breakpoints as PC checks, steps, events);
monitor.py adds `monitor` commands for what gdb cannot see (events, EL2,
ownership); session.py runs one session over one run; symbols.py and
dwarf_lines.py give gdb an ELF with our routines' symbols and source lines;
attach.py is what the command line calls. See docs/gdb.md.
"""
