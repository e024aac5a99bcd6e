"""Sweeps of the guest_asm routines against their reference models, and tests of the sweep itself.

Default run: every routine's quick plan under every policy (one shared
Bench, a few seconds), the models' policy table, the case enumeration, and
proof that the judge catches broken routines and leaked guest bytes.
`pytest -m sweep`: the full plans, two worker processes, printing the
number of cases and the speed.
"""
from __future__ import annotations

import random

import pytest

from faultlab import reference as ref
from faultlab.sweep import (
    GUEST_ASM,
    POISON,
    ROUTINES,
    Bench,
    Shard,
    leaks,
    cases,
    full_product,
    run_case,
    run_sweep,
    traits_of,
)
from hyp.policies import POLICIES

POLICY_NAMES = list(POLICIES)


@pytest.fixture(scope="module")
def bench() -> Bench:
    return Bench()


# =========================================================================== the quick sweeps


@pytest.mark.parametrize("name", list(ROUTINES))
def test_quick_sweep(bench, name):
    summary = run_sweep(name, bench=bench)
    assert summary.cases > 0
    assert summary.ok, str(summary)
    # every policy ran, and the guest page was really in the way in some cases
    assert {c.policy for c in cases(ROUTINES[name], False, POLICY_NAMES)} == set(POLICY_NAMES)
    assert summary.outcomes.get("returned", 0) < summary.cases


# =========================================================================== the policy table of the models


@pytest.mark.parametrize("policy,fixup,plain,user", [
    ("panic", ref.Fate.PANIC, ref.Fate.PANIC, ref.Fate.PANIC),
    ("inject", ref.Fate.FIXUP, ref.Fate.OOPS, ref.Fate.SIGNAL),
    ("inject-reclaim", ref.Fate.FIXUP, ref.Fate.RECLAIM, ref.Fate.SIGNAL),
    ("reclaim", ref.Fate.RECLAIM, ref.Fate.RECLAIM, ref.Fate.RECLAIM),
    ("rme-gpc-reclaim", ref.Fate.RECLAIM, ref.Fate.RECLAIM, ref.Fate.RECLAIM),
    ("rme-gpc-el3-inject", ref.Fate.OOPS, ref.Fate.OOPS, ref.Fate.KILL),
])
def test_fate_of_a_guest_page_access(policy, fixup, plain, user):
    """docs/routines.md's policy table, for the three kinds of access the routines make."""
    traits = traits_of(POLICIES[policy])
    assert ref.fate(traits, ref.Access.FIXUP) is fixup
    assert ref.fate(traits, ref.Access.PLAIN) is plain
    assert ref.fate(traits, ref.Access.USER) is user


def test_every_policy_has_traits():
    assert {traits_of(p).name for p in POLICIES.values()} == set(POLICIES)


# =========================================================================== models on their own

GUEST_LO = 0x1000


def _window(data: bytes, guest: bool = True) -> ref.Window:
    """Bytes at [0x0, 0x2000) with the guest page at [0x1000, 0x2000)."""
    return ref.Window("w", 0, data, (GUEST_LO, 2 * GUEST_LO) if guest else None)


def test_zeropad_model_pads_with_zeros_and_keeps_the_page():
    data = bytes(range(1, 0x81)) * 32 + bytes([0x99]) * GUEST_LO
    for policy, outcome, reclaimed in [("inject", "returned", False), ("reclaim", "returned", True), ("panic", "hyp-panic", False)]:
        exp = ref.load_unaligned_zeropad(ref.RefCase((GUEST_LO - 3,), {"w": _window(data)}, traits_of(POLICIES[policy])))
        assert exp.outcome == outcome
        assert exp.reclaimed == (frozenset({"w"}) if reclaimed else frozenset())
        if outcome == "returned":
            assert exp.regs["x0"] == int.from_bytes(data[GUEST_LO - 3 : GUEST_LO], "little")


def test_zeropad_model_on_the_guest_page_itself_is_a_nested_fault():
    data = bytes(GUEST_LO) + bytes([0x99]) * GUEST_LO
    exp = ref.load_unaligned_zeropad(ref.RefCase((GUEST_LO + 2,), {"w": _window(data)}, traits_of(POLICIES["inject"])))
    assert exp.outcome == "host-oops"
    # with the force-reclaim path the fixup's own re-read reclaims the page, like any kernel access
    exp = ref.load_unaligned_zeropad(ref.RefCase((GUEST_LO + 2,), {"w": _window(data)}, traits_of(POLICIES["inject-reclaim"])))
    assert (exp.outcome, exp.regs["x0"], exp.reclaimed) == ("returned", 0, frozenset({"w"}))


def test_copy_model_accepts_only_the_promised_range():
    data = bytes([7]) * GUEST_LO + bytes([0x99]) * GUEST_LO
    windows = {"src": _window(data), "dst": ref.Window("dst", 0x10000, bytes([0x40]) * 0x100)}
    exp = ref.copy_from_user(ref.RefCase((0x10000, GUEST_LO - 100, 200), windows, traits_of(POLICIES["inject"])))
    assert exp.outcome == "returned"
    ok = lambda ret: not exp.ret_check({"x0": ret})  # noqa: E731
    assert ok(100) and ok(100 + 48)
    assert not ok(99), "more reported copied than could be"
    assert not ok(149), "less than the slack of our 64-byte blocks allows"
    assert not ok(200), "nothing copied although the first byte was readable"


def test_vmm_model_counts_skipped_accesses():
    data = bytes([5]) * GUEST_LO + bytes([0x99]) * GUEST_LO
    windows = {"guest": _window(data), "out": ref.Window("out", 0x10000, bytes([0x40]) * 0x100)}
    exp = ref.vmm_main(ref.RefCase((GUEST_LO - 12, 30, 0x10010), windows, traits_of(POLICIES["inject"])))
    # words at -12 (ok), -4 (straddles), +4, then bytes +12..+17 (faults: 2 + 6)
    assert exp.regs == {"x0": 8, "x1": 8}


# =========================================================================== case enumeration


def test_full_plan_of_a_copy_has_every_length_up_to_two_pages():
    todo = list(cases(ROUTINES["__arch_copy_from_user"], True, POLICY_NAMES))
    assert {c.sizes[0] for c in todo} >= set(range(2 * 4096 + 1))
    small = [c for c in todo if c.sizes == (7,) and c.side == "src"]
    assert {c.boundary for c in small} == set(range(8)), "every boundary position for short copies"
    assert {c.policy for c in small} == set(POLICY_NAMES)
    assert {c.align for c in todo} == set(range(16))
    assert {c.policy for c in todo if c.sizes[0] > 1000} == set(POLICY_NAMES), "rotation still reaches every policy"


def test_exhaustive_plans_are_the_whole_cross_product():
    spec = ROUTINES["get_user_4"]
    assert sum(1 for _ in cases(spec, True, POLICY_NAMES)) == full_product(spec, len(POLICY_NAMES))


def test_cases_are_deterministic():
    spec = ROUTINES["strscpy"]
    assert list(cases(spec, False, POLICY_NAMES)) == list(cases(spec, False, POLICY_NAMES))


# =========================================================================== the judge has teeth

MUTATIONS = [
    ("copy-fixup-claims-all", "uaccess.S", "9998:\tsub\tx0, end, dst\n\tret\nSYM_FUNC_END(__arch_copy_from_user)",
     "9998:\tmov\tx0, #0\n\tret\nSYM_FUNC_END(__arch_copy_from_user)", "__arch_copy_from_user", "copied"),
    ("copy-no-one-byte-retry", "uaccess.S", "\tUSER(9998f, ldtrb w7, [srcin])\n\tstrb\tw7, [dst], #1\n", "",
     "__arch_copy_from_user", "at least 1"),
    ("copy-to-user-off-by-one", "uaccess.S", "9998:\tsub\tx0, end, dst\n\tret\nSYM_FUNC_END(__arch_copy_to_user)",
     "9998:\tsub\tx0, end, dst\n\tsub\tx0, x0, #1\n\tret\nSYM_FUNC_END(__arch_copy_to_user)", "__arch_copy_to_user", "copied"),
    ("zeropad-without-entry", "word_at_a_time.S", "\t_asm_extable_load_unaligned_zeropad 8880b, 8881f, \\dst, \\addr\n", "",
     "full_name_hash", "outcome host-oops"),
    ("get-user-keeps-junk", "uaccess.S", "_asm_extable_uaccess_err_zero 1b, 2b, x0, x1", "_asm_extable_uaccess_err_zero 1b, 2b, x0, xzr",
     "get_user_4", "x1 = "),
    ("strncpy-keeps-bytes-after-nul", "uaccess.S", "\tlsr\tx9, x9, #7\t\t\t// 0xff for each byte before the NUL\n\tand\tx7, x7, x9\n",
     "\tlsr\tx9, x9, #7\n", "strncpy_from_user", "wrong bytes"),
    ("vmm-handler-does-not-count", "vmm.S", "\tadd\tx4, x4, #1\n", "", "vmm_main", "x1 = "),
    ("vmm-resumes-at-the-wrong-place", "vmm.S", "\tmov\tx0, x8\n\tret\n", "\tadd\tx0, x3, #4\n\tret\n", "vmm_main", "x0 = "),
    ("clear-user-overreports", "uaccess.S", "9:\tsub\tx0, x2, x3\n", "9:\tmov\tx0, #0\n", "__arch_clear_user", "cleared"),
]


@pytest.mark.parametrize("file,old,new,routine,message", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_sweep_catches_a_broken_routine(file, old, new, routine, message):
    source = (GUEST_ASM / file).read_text()
    assert old in source, "the mutation no longer applies: update it"
    summary = run_sweep(routine, policies=["inject"], bench=Bench({file: source.replace(old, new)}))
    assert not summary.ok
    assert any(message in p for f in summary.failures for p in f.problems), str(summary)


def test_leak_check_finds_guest_bytes():
    secret = bytes(random.Random(3).randrange(0x80, 0x100) for _ in range(4096))
    grams = [frozenset(secret[i : i + 4] for i in range(4093))]
    spec = ROUTINES["__arch_copy_from_user"]
    window = ref.Window("dst", 0x1000, bytes([0x41]) * 64)
    regs = {f"x{i}": POISON[i % 8] for i in range(31)}
    assert leaks(spec, regs, {"dst": window.data}, {"dst": window}, grams) == []
    leaked = dict(regs, x5=int.from_bytes(secret[100:108], "little") >> 16)  # six guest bytes in a register
    assert any("x5" in p for p in leaks(spec, leaked, {"dst": window.data}, {"dst": window}, grams))
    pointer = dict(regs, x6=0xFFFF_0000_0000_0000 | int.from_bytes(secret[200:206], "little"))
    assert leaks(spec, pointer, {"dst": window.data}, {"dst": window}, grams) == [], "kernel pointers are skipped"
    memory = bytes([0x41]) * 10 + secret[:1] + bytes([0x41]) * 53
    assert any("guest-range byte" in p for p in leaks(spec, regs, {"dst": memory}, {"dst": window}, grams))


DIFFERENTIAL = ["full_name_hash", "hashlen_string", "strscpy", "__arch_copy_from_user", "strncpy_from_user", "get_user_8", "vmm_main"]


@pytest.fixture(scope="module")
def two_secrets() -> tuple[Bench, Bench]:
    return Bench(secret_seed=1), Bench(secret_seed=2)


@pytest.mark.parametrize("name", DIFFERENTIAL)
def test_guest_data_does_not_reach_the_host(name, two_secrets):
    """Run the same cases with two different guest secrets: nothing the host sees may differ."""
    spec = ROUTINES[name]
    todo = [c for c in cases(spec, False, ["inject", "inject-reclaim"]) if c.side is not None]
    a, b = two_secrets
    for case in todo:
        ra, rb = run_case(a, spec, case), run_case(b, spec, case)
        assert ra.outcome == rb.outcome, case
        if ra.outcome == "returned":
            assert ra.regs == rb.regs, case
            for buf, window in ra.windows.items():
                got_a, got_b = bytearray(ra.memory[buf]), bytearray(rb.memory[buf])
                if window.guest is not None and buf not in ra.reclaimed:
                    lo, hi = window.guest[0] - window.va, window.guest[1] - window.va
                    got_a[lo:hi] = got_b[lo:hi] = bytes(hi - lo)  # the guest's own page differs, as it should
                assert got_a == got_b, (case, buf)


# =========================================================================== the full sweeps

# Each routine's full plan in FULL_PARTS parts (Shard K/N of its plan: the union of the parts is the
# plan case for case, tests/test_shards.py), so that pytest-xdist spreads a long routine over workers
# (the largest plans have 24,575 cases); the parts share the module's Bench (one per worker) instead
# of each item forking two processes that set up benches of their own. A fixed count: sizing parts by
# plan would enumerate every plan (0.4 s) at collection, in every run.
FULL_PARTS = 4


def _full_parts() -> list:
    return [pytest.param(name, Shard(k, FULL_PARTS), id=f"{name}-{k}of{FULL_PARTS}") for name in ROUTINES for k in range(1, FULL_PARTS + 1)]


@pytest.mark.sweep
@pytest.mark.parametrize("name,part", _full_parts())
def test_full_sweep(name, part, bench, capsys):
    summary = run_sweep(name, full=True, bench=bench, shard=part)
    with capsys.disabled():
        print(f"\n{name} part {part}: {summary.cases} of {summary.planned} cases ({summary.full_product:.3g} in the full cross product), "
              f"{summary.seconds:.1f}s, {summary.rate:.0f} cases/s")
    assert summary.cases == len(summary.case_ids) > 0
    assert summary.ok, str(summary)


@pytest.mark.parametrize("policy", ["inject", "inject-reclaim", "panic"])
@pytest.mark.parametrize("model", ["copy_from_kernel_nofault", "copy_to_kernel_nofault"])
def test_nofault_models_one_step_prefix_is_the_chunk_loop(monkeypatch, policy, model):
    """faultlab/reference/access.py copies the chunks before any guest page in one step: on every
    length 0-40 and every distance of the guest page, and with overlapping buffers, the model's
    expectation equals the plain chunk-by-chunk loop's."""
    from faultlab.reference import access

    src_lo, dst_lo, page = 0x10000, 0x20000, 0x1000
    rng = random.Random(7)

    def windows(src_guest: bool) -> dict[str, ref.Window]:
        src = ref.Window("src", src_lo, rng.randbytes(2 * page), (src_lo + page, src_lo + 2 * page) if src_guest else None)
        dst = ref.Window("dst", dst_lo, rng.randbytes(2 * page), None if src_guest else (dst_lo + page, dst_lo + 2 * page))
        return {"src": src, "dst": dst}

    def both(case: ref.RefCase):
        fast = getattr(access, model)(case)
        with monkeypatch.context() as m:
            m.setattr(access, "_clear_prefix", lambda *a: 0)
            slow = getattr(access, model)(case)
        return fast, slow

    traits = traits_of(POLICIES[policy])
    for n in range(0, 41):
        for back in range(0, 42, 3):  # the guest page this far past the buffer's start
            for src_guest in (True, False):
                w = windows(src_guest)
                src = src_lo + page - back if src_guest else src_lo + 8
                dst = dst_lo + page - back if not src_guest else dst_lo + 8
                fast, slow = both(ref.RefCase((dst, src, n), w, traits))
                assert (fast.outcome, fast.regs, fast.reclaimed, fast.touched) == (slow.outcome, slow.regs, slow.reclaimed, slow.touched)
                assert fast.images(fast.regs) == slow.images(slow.regs), (n, back, src_guest)
    # overlapping buffers: the prefix step stays out of it
    data = rng.randbytes(2 * page)
    w = {"w": ref.Window("w", src_lo, data, None)}
    for n in (8, 24, 40):
        for delta in (-16, -8, 8, 16):
            fast, slow = both(ref.RefCase((src_lo + 64 + delta, src_lo + 64, n), w, traits))
            assert fast.images(fast.regs) == slow.images(slow.regs)


def test_window_fill_is_the_cases_own_and_in_the_fill_range():
    """faultlab/sweep/case.py window_fill: a function of the case's rng (same seed, same bytes), bytes
    only from the fill table's image, different cases different bytes, big windows drawn afresh."""
    from faultlab.sweep.case import FILL_POOL, window_fill
    from faultlab.sweep.spec import FILL_DST, FILL_SRC

    for table in (FILL_SRC, FILL_DST):
        allowed = set(table)
        a = window_fill(random.Random(5), 12288, table)
        assert a == window_fill(random.Random(5), 12288, table) and len(a) == 12288
        assert set(a) <= allowed and len(set(a)) > len(allowed) // 2
        assert window_fill(random.Random(6), 12288, table) != a
        big = window_fill(random.Random(5), FILL_POOL, table)
        assert len(big) == FILL_POOL and set(big) <= allowed
