"""The QEMU differential: the same load/store faults on QEMU TCG and on our machine, compared.

`qemu-system-aarch64 -M virt,virtualization=on -cpu max` runs a bare-metal harness at EL2
(assembled by kasm) that owns stage 1 and stage 2 and executes each case at EL0 or EL1; our
machine runs the same cases through the emu API. Every difference is either a known QEMU
departure from the Arm ARM (departures.py, keyed by QEMU version), a gap of our machine that an
issue names (a family marked so in cases.py), or unexplained. The parts, one job each:
    layout      addresses and descriptors both sides share (VAs, frames, stage-1/stage-2 entries)
    forms       the load/store forms, one per class the access decoder knows
    cases       Case, families (straddle, permission, maintenance, pan, access flag, S1PTW, alignment)
    harness     the EL2 harness source and the RAM image (tables, case table) QEMU boots
    qemu_side   boot QEMU on a batch of cases and read the results out of the RAM file
    machine_side  run the cases on emu.machine.Machine
    observation Observation: what one side saw for one case
    departures  known QEMU departures with the Arm ARM text that decides them
    compare     classify every case: agree, QEMU departure, machine gap, unexplained
    differential  select cases and run both sides (what scripts/qemu_syndromes.py calls)
"""
