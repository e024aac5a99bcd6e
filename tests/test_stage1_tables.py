"""Stage-1 tables in physical frames: descriptors, the walk, AF, TLBI, and stage-2 faults on the walk (S1PTW).

Expected values come from the Arm ARM (D8.3 VMSAv8-64 descriptors; D24.2.45 ESR ISS:
S1PTW, WnR "for a stage 2 fault on a stage 1 translation table walk, 0 for a read of the
walk"; HPFAR_EL2.FIPA = the IPA of the table access) and, for the walk itself, from a
second walk written here independently over the raw frames.
"""
from __future__ import annotations

import itertools

import pytest

from conftest import CODE_VA, DATA_VA, RecordingEl2, assemble
from emu.machine import Machine
from emu.memory import PAGE_SIZE, Perms
from emu.outcome import OutcomeKind
from emu.stage1_tables import decode_leaf, page_descriptor
from emu.syndrome import non_architectural_fields


def independent_walk(m: Machine, va: int) -> tuple[int | None, list[int]]:
    """Read the four descriptors by hand: (PA of the page or None, table frames read)."""
    table = m.stage1.builder.roots.get(va >> 63)
    frames = []
    for level, shift in enumerate((39, 30, 21, 12)):
        if table is None:
            return None, frames
        frames.append(table)
        desc = m.phys.read_u64((table << 12) + ((va >> shift) & 0x1FF) * 8)
        if desc & 3 != 3:
            return None, frames
        table = (desc >> 12) & ((1 << 36) - 1)
    return table << 12, frames


@pytest.mark.parametrize("read, write, exec_, user, af", list(itertools.product((False, True), repeat=5)))
def test_page_descriptor_bits_and_round_trip(read, write, exec_, user, af):
    desc = page_descriptor(0x12345, read=read, write=write, exec_=exec_, user=user, af=af)
    assert desc & 3 == 3 and (desc >> 12) & ((1 << 36) - 1) == 0x12345
    assert bool(desc & (1 << 6)) == user  # AP[1]
    assert bool(desc & (1 << 7)) == (not write)  # AP[2]: read-only
    assert bool(desc & (1 << 10)) == af
    assert bool(desc & (1 << 53)) == (user or not exec_)  # PXN: the kernel never runs user pages
    assert bool(desc & (1 << 54)) == (not user or not exec_)  # UXN
    leaf = decode_leaf(desc, 0xFFFF_0000_0000_0123, 3)
    assert (leaf.pfn, leaf.read, leaf.write, leaf.exec_, leaf.user, leaf.af) == (0x12345, read, write, exec_, user, af)


def test_every_python_mapping_is_real_descriptors_the_walk_finds(rig):
    m = rig.machine
    vas = [DATA_VA, DATA_VA + PAGE_SIZE, m.kernel_stack_top - PAGE_SIZE, m.user_stack_top - PAGE_SIZE, m.task]
    for va in vas:
        pa, frames = independent_walk(m, va)
        assert pa == m.stage1.ptes[va].pfn << 12 == m.translate(va)
        assert set(frames) <= m.stage1.builder.frames
    assert m.stage1.builder.frames.isdisjoint(pte.pfn for pte in m.stage1.ptes.values())


@pytest.mark.parametrize("va, level", [
    (DATA_VA + 2 * PAGE_SIZE, 3),  # same last-level table as the data pages
    (DATA_VA + (1 << 21), 2),  # the next 2 MiB: no level-3 table there
    (DATA_VA + (1 << 30), 1),  # the next 1 GiB
    (DATA_VA + (1 << 39), 0),  # the next 512 GiB
    (0x0001_0000_0000_0000, 0),  # VA[63:48] neither all zeros nor all ones
    (0xFFFE_0000_0000_0000, 0),
])
def test_translation_fault_level_is_the_first_invalid_descriptor(rig, va, level):
    m = rig.machine
    m.load(CODE_VA, assemble("ldr x1, [x0]; ret", CODE_VA), "rx")
    result = m.call(CODE_VA, va, budget=100)
    abort = result.outcome.detail
    assert abort.stage == 1 and abort.esr.fsc == 0x04 + level and abort.far == va


@pytest.mark.parametrize("el", [0, 1])
@pytest.mark.parametrize("text, wnr", [("ldr x1, [x0]", False), ("str x1, [x0]", True), ("ldrb w1, [x0, #7]", False)])
def test_access_flag_zero_is_an_access_flag_fault(text, wnr, el):
    """AF = 0 and no FEAT_HAFDBS: DFSC 0x0B (level 3), nothing written, the flag stays 0."""
    m = Machine(phys_size=16 << 20)
    data, code = (0x40_0000, 0x80_0000) if el == 0 else (DATA_VA, CODE_VA)
    m.map_new(data, 1, "rwu" if el == 0 else "rw")
    m.load(code, assemble(text + "; ret", code), "rxu" if el == 0 else "rx")
    m.stage1.set_access_flag(data, False)
    result = m.call(code, data, 0x1234, el=el, budget=100)
    abort = result.outcome.detail
    assert abort.stage == 1 and abort.esr.fsc == 0x0B
    assert abort.esr.ec == (0x24 if el == 0 else 0x25) and abort.esr.wnr == wnr
    assert abort.far == data + (7 if "#7" in text else 0)
    assert not m.stage1.ptes[data].af and not m.stage1.lookup(data).af
    m.stage1.set_access_flag(data, True)
    assert m.call(code, data, 0x1234, el=el, budget=100).returned


def test_guest_code_edits_its_page_table_and_tlbi_makes_it_visible(rig):
    """The kernel's own way: write the descriptor, TLBI, DSB, ISB; the next access walks again."""
    m = rig.machine
    leaf_pa = m.stage1.builder.leaf_pa(DATA_VA)
    table_va = 0xFFFF_0000_0300_0000
    m.map_page(table_va, leaf_pa >> 12, "rw")  # the last-level table, mapped like Linux's linear map
    m.write_u64(DATA_VA, 0xAB)
    code = assemble("ldr x3, [x0]; str xzr, [x1]; tlbi vmalle1; dsb ish; isb; ldr x4, [x0]; ret", CODE_VA)
    m.load(CODE_VA, code, "rx")
    result = m.call(CODE_VA, DATA_VA, table_va + (leaf_pa & 0xFFF), budget=100)
    abort = result.outcome.detail
    assert result.regs["x3"] == 0xAB
    assert abort.stage == 1 and abort.esr.fsc == 0x07 and abort.far == DATA_VA and abort.pc == CODE_VA + 20
    assert m.stage1.lookup(DATA_VA) is None


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("text, is_write", [("ldr x1, [x0]", False), ("str x1, [x0]", True), ("ldp x1, x2, [x0]", False)])
def test_table_frame_refused_at_stage2_is_an_s1ptw_abort(rig, stage2, level, text, is_write):
    """A walk that cannot read its level-`level` table: stage 2 fault, S1PTW = 1, ISV = 0,
    WnR = the access's direction (the access's fault record goes to the walk's stage-2
    translation in the ASL; QEMU 7.2 measured the same), FAR = the VA, HPFAR = the table's IPA."""
    m = rig.machine
    va = DATA_VA + PAGE_SIZE + 8
    m.load(CODE_VA, assemble(text + "; ret", CODE_VA), "rx")
    assert m.call(CODE_VA, va, budget=100).returned  # walks fine first (and is cached)
    _, frames = independent_walk(m, va)
    table = frames[level]
    stage2.revoke(table)
    m.el2 = el2 = RecordingEl2(stage2)
    result = m.call(CODE_VA, va, 0x1111, 0x2222, budget=100)
    assert result.outcome.kind == "stage2-abort"
    abort = el2.aborts[0]
    if level == 0:
        # The code's walk shares the TTBR1 root: the instruction fetch is refused first.
        assert abort.esr.ec == 0x20 and abort.esr.s1ptw and abort.far == CODE_VA
        assert abort.ipa == (table << 12) + ((CODE_VA >> 39) & 0x1FF) * 8
        return
    desc_pa = (table << 12) + ((va >> (39 - 9 * level)) & 0x1FF) * 8
    esr = abort.esr
    assert abort.stage == 2 and esr.s1ptw and esr.ec == 0x24 and esr.fsc == 0x07
    assert not esr.isv and esr.wnr == is_write and not esr.cm
    assert abort.far == va and abort.ipa == desc_pa and abort.hpfar == (desc_pa >> 8) & ~0xF
    assert non_architectural_fields(esr, stage=2, target_el=2) == ()
    stage2.grant(table)
    assert m.call(CODE_VA, va, budget=100).returned


def test_code_page_table_refused_is_an_instruction_abort_with_s1ptw(rig, stage2):
    m = rig.machine
    m.load(CODE_VA, assemble("ret", CODE_VA), "rx")
    _, frames = independent_walk(m, CODE_VA)
    stage2.revoke(frames[3])
    m.el2 = el2 = RecordingEl2(stage2)
    m.call(CODE_VA, budget=100)
    abort = el2.aborts[0]
    assert abort.esr.ec == 0x20 and abort.esr.s1ptw and abort.esr.fsc == 0x07 and abort.far == CODE_VA


def test_alignment_beats_s1ptw(rig, stage2):
    m = rig.machine
    m.load(CODE_VA, assemble("ldar x1, [x0]; ret", CODE_VA), "rx")
    _, frames = independent_walk(m, DATA_VA)
    stage2.revoke(frames[3])
    m.el2 = el2 = RecordingEl2(stage2)
    result = m.call(CODE_VA, DATA_VA + 4, budget=100)
    assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION and result.outcome.detail.esr.fsc == 0x21
    assert el2.aborts == []


def test_perms_survive_the_walk_for_every_combination():
    m = Machine(phys_size=16 << 20)
    for i, letters in enumerate(itertools.product(("", "r"), ("", "w"), ("", "x"), ("", "u"))):
        perms = Perms.parse("".join(letters))
        va = DATA_VA + i * PAGE_SIZE
        m.map_new(va, 1, perms)
        assert m.stage1.lookup(va).perms == perms


def test_builder_follows_the_tables_in_memory_after_a_restore(rig):
    """A checkpoint that puts frames back (tables included) and the builder's state: mappings
    made afterwards land in the tables the memory really links, not in orphaned ones."""
    m = rig.machine
    state, top = m.stage1.builder.state(), m.phys._top
    saved = {pfn: m.phys.read(pfn << 12, PAGE_SIZE) for pfn in m.stage1.builder.frames}
    far = DATA_VA + (5 << 30)  # a new 1 GiB region: new level-1/2/3 tables
    m.map_new(far, 1, "rw")
    assert m.stage1.builder.frames - set(saved)
    for pfn, data in saved.items():  # the rewind
        m.phys.write(pfn << 12, data)
    for pfn in m.stage1.builder.frames - set(saved):
        m.phys.zero(pfn)
    m.stage1.builder.restore(state)
    m.phys._top = top
    m.stage1.ptes.pop(far)
    m.flush_tlb()
    assert m.stage1.lookup(far) is None
    pfn = m.map_new(far + PAGE_SIZE, 1, "rw")[0]
    assert independent_walk(m, far + PAGE_SIZE)[0] == pfn << 12 == m.translate(far + PAGE_SIZE)


def test_map_many_writes_the_tables_map_writes_page_by_page():
    """Stage1.map_many (a kernel image's boot mapping, a table at a time) leaves the same descriptors,
    table frames, walks and Python records as one `map` per page, remapping included."""
    import random

    rng = random.Random(5)
    perms = [Perms.parse(p) for p in ("r", "rw", "rx", "rwu", "rxu")]
    base = 0xFFFF_8000_0800_0000
    pages = sorted({base + rng.randrange(0, 3 << 21, PAGE_SIZE) for _ in range(700)})  # 3 level-3 tables, holes
    pages += [base + (5 << 30), 0x0000_0040_0000_0000]  # a table alone, the other half
    first = [(va, 0x4100 + i, rng.choice(perms)) for i, va in enumerate(pages)]
    again = [(va, 0x4800 + i, rng.choice(perms)) for i, va in enumerate(pages[::3])]  # some mapped a second time
    one, many = Machine(phys_size=32 << 20), Machine(phys_size=32 << 20)
    for m in (one, many):  # the same earlier mapping in one of the tables
        m.stage1.map(base + PAGE_SIZE, 0x4000, perms[1])
    for va, pfn, p in first + again:
        one.stage1.map(va, pfn, p)
    many.stage1.map_many(first)
    many.stage1.map_many(again)
    assert one.stage1.ptes == many.stage1.ptes
    assert one.stage1.builder.frames == many.stage1.builder.frames and one.stage1.builder.roots == many.stage1.builder.roots
    for frame in sorted(one.stage1.builder.frames):
        assert one.phys.read(frame << 12, PAGE_SIZE) == many.phys.read(frame << 12, PAGE_SIZE), hex(frame)
    for va in [base + PAGE_SIZE, *pages, base + (3 << 21), base + (6 << 30)]:
        assert independent_walk(one, va) == independent_walk(many, va)
        assert one.stage1.lookup(va) == many.stage1.lookup(va)
