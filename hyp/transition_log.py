"""The transition log: every call of an ownership transition, with the frames it concerns before and after.

pKVM itself keeps no such log; the model does so that tests and reports can
say which hypercall moved which frame. Logging lives in one decorator rather
than in each transition so that a transition method holds only its checks and
effects, in mem_protect.c's order.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Iterable, Protocol

from abi.linux import Errno
from hyp.page_state import FrameState, Transition


class TransitionLog(Protocol):
    """What the decorator needs from the model it logs."""

    transitions: list[Transition]

    def is_memory(self, pfn: object) -> bool: ...

    def frame_state(self, pfn: int) -> FrameState | None: ...


# Given the model and the call's arguments (defaults filled in), the frames the call concerns.
Touches = Callable[..., Iterable[object]]


def transition(name: str, touches: Touches) -> Callable[[Callable[..., Errno]], Callable[..., Errno]]:
    """Log each call of the decorated method as a :class:`Transition` named after the kernel function.

    ``touches`` is called before the body, so a frame the call is about to
    change (or to unmap from a guest) is found from the state it starts in.
    Arguments are logged as a tuple in parameter order, defaults included.
    """

    def decorate(body: Callable[..., Errno]) -> Callable[..., Errno]:
        signature = inspect.signature(body)
        nr_args = len(signature.parameters) - 1

        @functools.wraps(body)
        def run(self: TransitionLog, *args: object, **kwargs: object) -> Errno:
            if kwargs or len(args) != nr_args:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                args = tuple(bound.arguments.values())[1:]
            frames = tuple(p for p in touches(self, *args) if self.is_memory(p))
            before = tuple(self.frame_state(p) for p in frames)
            result = Errno(body(self, *args))
            after = tuple(self.frame_state(p) for p in frames)
            self.transitions.append(Transition(name, frames[0] if frames else None, args, result, before, after))
            return result

        return run

    return decorate
