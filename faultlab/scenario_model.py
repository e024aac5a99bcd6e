"""What a scenario is, as data: buffers, the routine, the task, expectations, and how per-policy and per-kernel expectations merge.

Apart from faultlab/scenario.py (reading and validating the TOML) so the
runner, the reports and the plugin can use the model without the parser.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from emu.outcome import OutcomeKind

ROUTINE_KINDS = ("file", "asm", "vmlinux")
# Every ending a scenario run can meet (nested-return is the emulator's internal marker).
OUTCOMES = tuple(k.value for k in OutcomeKind if k is not OutcomeKind.NESTED_RETURN)
EXPECT_KEYS = ("outcome", "x0", "regs", "guest", "signal", "message", "memory", "confidentiality")
GUEST_STATES = ("intact", "reclaimed", "changed", "n/a")
# A scenario is a page of TOML; a larger file is a mistake (a binary, /dev/zero), refused before parsing.
MAX_SCENARIO_BYTES = 1 << 20
# Register arguments are 64-bit: an integer outside [-2**63, 2**64) cannot be passed, only truncated.
ARG_MIN, ARG_LIMIT = -(1 << 63), 1 << 64


def check_u64(value: int) -> int | None:
    """`value` as an X register holds it (two's complement for negatives), or None when it does not fit in 64 bits."""
    if not ARG_MIN <= value < ARG_LIMIT:
        return None
    return value & (ARG_LIMIT - 1)


class TaskKind(enum.StrEnum):
    """`current` while the routine runs (`[routine] task`): what fault.c's do_page_fault sees as the mm.

    A user task has an mm whose VMAs cover the scenario's user buffers (the
    host stands a user stage-1 mapping for its VMA); a kernel thread has no
    mm, so a fault on a user address goes straight to the exception table
    ("no user context"). Addresses in the kernel half never consult the mm.
    """

    USER = "user"
    KTHREAD = "kthread"

    @classmethod
    def default_for(cls, el: int, buffers: "tuple[Buffer, ...]") -> "TaskKind":
        """EL0 code is a user task; so is EL1 code reaching user buffers (a user mapping lives in some
        task's mm: the task whose syscall the kernel is serving); otherwise a kernel thread."""
        return cls.USER if el == 0 or any(b.user for b in buffers) else cls.KTHREAD


class ScenarioError(ValueError):
    def __init__(self, file: str, line: int, field_name: str, message: str) -> None:
        super().__init__(f"{file}:{line}: {field_name}: {message}")
        self.file, self.line, self.field, self.message = file, line, field_name, message


@dataclass(frozen=True)
class Buffer:
    name: str
    pages: int
    user: bool = False
    alias: bool = False
    fill: bytes = b""
    at: int = 0
    protect: tuple[int, ...] = ()
    share: tuple[int, ...] = ()


@dataclass(frozen=True)
class Routine:
    kind: str  # file | asm | vmlinux
    source: str  # file name, inline text, or vmlinux suite/path
    symbol: str
    el: int = 1
    args: tuple[str | int, ...] = ()
    pan: bool = True
    budget: int = 1_000_000
    task: TaskKind = TaskKind.KTHREAD  # `current`: a user task (with an mm) or a kernel thread
    line: int = 0  # line of an inline `asm` body's first line in the scenario file
    block: bool = False  # the body is a multi-line string: its line n is at `line + n - 1`


@dataclass(frozen=True)
class MemoryExpectation:
    at: str  # an address expression ("buf + 4090")
    data: bytes
    line: int  # where the scenario file states it, for errors in `at`


@dataclass(frozen=True)
class Expectation:
    outcome: OutcomeKind | None = None
    x0: int | None = None
    regs: dict[str, int] = field(default_factory=dict)
    guest: str | None = None
    signal: str | None = None  # a name abi.linux knows (SIGSEGV), or "none"
    message: str | None = None
    memory: tuple[MemoryExpectation, ...] | None = None  # None: not stated; () stated empty (overrides)
    confidentiality: str | None = None

    @property
    def empty(self) -> bool:
        """States nothing: a run judged against it would pass whatever happened."""
        return all(getattr(self, k) in (None, (), {}) for k in self.__dataclass_fields__)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: str
    policies: tuple[str, ...]
    routine: Routine
    buffers: tuple[Buffer, ...]
    expect_all: Expectation
    expect_by_policy: dict[str, Expectation]
    # vmlinux = [k1, k2]: the kernels it runs on, and [expect.<policy>.<kernel>] overrides
    kernels: tuple[str, ...] = ()
    expect_by_kernel: dict[tuple[str, str], Expectation] = field(default_factory=dict)

    def variants(self) -> list["Scenario"]:
        """One scenario per kernel named in a `vmlinux = [...]` list (rows `<name>@<kernel>`); else itself."""
        if not self.kernels:
            return [self]
        return [self.on_kernel(k) for k in self.kernels]

    def on_kernel(self, kernel: str) -> "Scenario":
        by_policy = dict(self.expect_by_policy)
        for (policy, k), own in self.expect_by_kernel.items():
            if k == kernel:
                by_policy[policy] = _merge(by_policy.get(policy, Expectation()), own)
        return dataclasses.replace(
            self,
            name=f"{self.name}@{kernel}",
            routine=dataclasses.replace(self.routine, source=kernel),
            expect_by_policy=by_policy,
            kernels=(),
            expect_by_kernel={},
        )

    def judged(self, policy: str) -> bool:
        """Whether the scenario states any expectation for `policy` (else its runs are unjudged, never passed)."""
        return policy in self.expect_by_policy or not self.expect_all.empty

    def expectation(self, policy: str) -> Expectation:
        """Per-policy keys override the common ones."""
        own = self.expect_by_policy.get(policy)
        return self.expect_all if own is None else _merge(self.expect_all, own)


def _merge(base: Expectation, own: Expectation) -> Expectation:
    """`own`'s keys override `base`'s, key by key."""
    return Expectation(**{k: getattr(own, k) if _stated(getattr(own, k)) else getattr(base, k) for k in base.__dataclass_fields__})


def _stated(value) -> bool:
    # None (and an empty regs table) means "not stated"; memory = [] is stated: it clears an inherited list.
    return value is not None and value != {}
