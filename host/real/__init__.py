"""The real host: injected aborts handled by a vmlinux's own fault path (`--host real`)."""
from host.real.handler import LIVELOCK, RealHost

__all__ = ["RealHost", "LIVELOCK"]
