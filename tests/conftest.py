"""Shared fixtures: a fresh machine with a code page and two data pages; `--faultlab-shard K/N` for the sweeps."""
from __future__ import annotations

import gc
from dataclasses import dataclass

import pytest
from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks

from emu.machine import Machine
from faultlab.sweep.shard import Shard, ShardError

CODE_VA = 0xFFFF_8000_0800_0000
DATA_VA = 0xFFFF_0000_0010_0000  # two consecutive pages: DATA_VA and DATA_VA + PAGE_SIZE
ALIAS_VA = 0xFFFF_0000_0090_0000
USER_DATA_VA = 0x0000_0000_0040_0000
USER_CODE_VA = 0x0000_0000_0080_0000

_ks = Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)

# pytester: tests of the faultlab pytest plugin run a session in process (runpytest_inprocess) where a
# new interpreter would only add its start-up; tests about the console script keep a real subprocess.
# (pytester points HOME at its own folder: the user caches, e.g. the kernel cache, are not found there.)
pytest_plugins = ["pytester"]

SHARDED_MARKERS = ("sweep", "slow")  # the long tests CI's sweep job splits over a matrix of machines


def pytest_configure(config) -> None:
    """A full collection (generation 2) at most every 100 young ones instead of every 10.

    Why: a test process keeps dozens of booted kernels alive for the whole session (the shared
    shelves below: ~10k stage-1 entries each, ~1M tracked objects in all), and each full pass walks
    all of them: with the default thresholds a worker spent ~20% of its time there (30 passes of
    ~0.3 s). Fewer passes cost only memory (cyclic garbage waits longer); nothing a test asserts
    depends on when the collector runs.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session) -> None:
    """What collection built (modules, test items, fixtures) lives as long as the session: out of the collector's passes."""
    gc.collect()
    gc.freeze()


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--faultlab-shard", metavar="K/N", default=None,
        help="run only shard K of N of the sweep/slow-marked tests (index in node-id order mod N == K-1); other tests run in every shard",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every shard numbers the same list of marked tests
def pytest_collection_modifyitems(config, items) -> None:
    """Deselect the sweep/slow-marked tests of other shards, the same K/N partition as `faultlab sweep --shard`."""
    text = config.getoption("--faultlab-shard")
    if text is None:
        return
    try:
        shard = Shard.parse(text)
    except ShardError as exc:
        raise pytest.UsageError(str(exc).replace("--shard", "--faultlab-shard")) from None
    marked = sorted(item.nodeid for item in items if any(item.get_closest_marker(m) for m in SHARDED_MARKERS))
    mine = {marked[i] for i in shard.ids(len(marked))}
    marked_ids = set(marked)
    keep = [item for item in items if item.nodeid in mine or item.nodeid not in marked_ids]
    dropped = [item for item in items if item.nodeid in marked_ids and item.nodeid not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def assemble(text: str, addr: int) -> bytes:
    """Plain keystone for tests of the machine itself (the kernel-style front end is tested on its own)."""
    encoding, _ = _ks.asm(text, addr)
    data = bytes(encoding)
    expected = len([ln for ln in text.replace(";", "\n").splitlines() if ln.strip() and not ln.strip().endswith(":")])
    assert len(data) == 4 * expected, f"keystone dropped instructions from {text!r}"
    return data


@dataclass
class Rig:
    machine: Machine
    data_pfns: list[int]

    def load_code(self, text: str, va: int = CODE_VA, perms: str = "rx") -> int:
        self.machine.load(va, assemble(text, va), perms)
        return va


class Stage2Table:
    """A minimal stage 2 for emu tests: a set of frames the host may not touch."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.revoked: set[int] = set()
        self.asked: list[tuple[int, str]] = []

    def __call__(self, pfn, access):
        self.asked.append((pfn, access.value))
        return pfn not in self.revoked

    def revoke(self, pfn: int) -> None:
        self.revoked.add(pfn)
        self.machine.stage2_changed()

    def grant(self, pfn: int) -> None:
        self.revoked.discard(pfn)
        self.machine.stage2_changed()


class RecordingEl2:
    """EL2 handler that records stage-2 aborts and ends the run (or grants and retries)."""

    def __init__(self, table: Stage2Table, grant: bool = False) -> None:
        self.table = table
        self.grant = grant
        self.aborts = []
        self.hvcs = []

    def handle_abort(self, machine, abort):
        from emu.outcome import Outcome

        self.aborts.append(abort)
        if self.grant:
            self.table.grant(abort.ipa >> 12)
            return None
        return Outcome("stage2-abort", abort.summary(), abort)

    def handle_hvc(self, machine, imm):
        self.hvcs.append((imm, machine.cpu.x(0), machine.cpu.x(1)))
        machine.cpu.set_x(0, 0)
        return None


@pytest.fixture
def rig() -> Rig:
    m = Machine(phys_size=16 << 20)
    pfns = m.map_new(DATA_VA, 2, "rw")
    return Rig(m, pfns)


@pytest.fixture
def stage2(rig) -> Stage2Table:
    table = Stage2Table(rig.machine)
    rig.machine.stage2 = table
    return table


@pytest.fixture(scope="session")
def kernel_shelf(request):
    """host -> one VmlinuxShelf for the whole session (per xdist worker): each (vmlinux, policy, host) boots once.

    A boot costs 0.1-0.4 s and a restore under a millisecond (faultlab/snapshot.py), and
    tests/test_snapshot.py pins a restored boot byte-identical to a fresh one; tests that
    only need a booted kernel share these instead of booting per test (or per module).
    For the host the scenario files run on (the faultlab plugin's --faultlab-host), this is
    the plugin's own shelf, so scenarios/kernel/*.toml items and the tests share one boot.
    Tests about a fresh boot still make a VmlinuxShelf of their own.
    """
    from faultlab.kernel.lab import VmlinuxShelf
    from faultlab.pytest_plugin import _shelf

    plugin_shelf = _shelf(request.config)
    shelves: dict[str, VmlinuxShelf] = {plugin_shelf.host: plugin_shelf}

    def get(host: str = "model") -> VmlinuxShelf:
        if host not in shelves:
            shelves[host] = VmlinuxShelf(host, max_booted=64)
        return shelves[host]

    return get
