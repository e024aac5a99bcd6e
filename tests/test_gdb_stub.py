"""The gdb stub's protocol, driven over a socket by a Python gdb (tests/gdb_client.py), against independent references.

References: the lab's own layout (buffer addresses, physical frames read
directly, the assembled bytes), the register layout gdb expects (target.xml)
and the manual's packet semantics. Execution control is tests/test_gdb_stops.py.
No wait is unbounded: sockets and threads all have timeouts.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest

from emu.memory import PAGE_SIZE
from faultlab.gdb.attach import GdbAttach, connect_command
from faultlab.gdb.session import Address, GdbUsageError, Listener
from faultlab.lab import Lab
from gdb_client import ZEROPAD, attach as _attach, plain


def _regs_from_g(reply: str) -> list[int]:
    raw = bytes.fromhex(reply)
    core = [int.from_bytes(raw[i * 8 : i * 8 + 8], "little") for i in range(33)]
    return core + [int.from_bytes(raw[264:268], "little")]


# ------------------------------------------------------------------ handshake
def test_handshake_target_xml_and_registers_at_entry(tmp_path):
    debugged, gdb = _attach(tmp_path)
    try:
        features = gdb.cmd("qSupported:multiprocess+;swbreak+;xmlRegisters=i386")
        assert "qXfer:features:read+" in features and "PacketSize=" in features
        assert gdb.cmd("?").startswith("T05")
        xml, offset = "", 0
        while True:  # read target.xml in small windows, as gdb may
            part = gdb.cmd(f"qXfer:features:read:target.xml:{offset:x},40")
            xml += part[1:]
            offset += len(part) - 1
            if part[0] == "l":
                break
        root = ET.fromstring(xml)
        assert root.findtext("architecture") == "aarch64"
        core = root.find("feature[@name='org.gnu.gdb.aarch64.core']")
        names = [r.get("name") for r in core.findall("reg")]
        assert names == [f"x{i}" for i in range(31)] + ["sp", "pc", "cpsr"]
        fpu = root.find("feature[@name='org.gnu.gdb.aarch64.fpu']")
        assert [r.get("name") for r in fpu.findall("reg")] == [f"v{i}" for i in range(32)] + ["fpsr", "fpcr"]
        # PSTATE's fields where the Arm ARM puts them in SPSR_ELx (C5.2.19): EL [3:2], DAIF [9:6], PAN 22, NZCV [31:28].
        fields = {f.get("name"): (int(f.get("start")), int(f.get("end"))) for f in core.findall("flags[@id='cpsr_flags']/field")}
        assert fields["EL"] == (2, 3) and fields["D"] == (9, 9) and fields["F"] == (6, 6) and fields["PAN"] == (22, 22)
        assert [fields[k] for k in "NZCV"] == [(31, 31), (30, 30), (29, 29), (28, 28)]
        sizes = [int(r.get("bitsize")) for feature in root.findall("feature") for r in feature.findall("reg")]
        regnums = [int(r.get("regnum")) for feature in root.findall("feature") for r in feature.findall("reg")]
        assert regnums == list(range(len(regnums)))
        g = gdb.cmd("g")
        assert len(g) == sum(sizes) // 4  # two hex digits per byte: every described register, in order

        lab = debugged.gdb.session.lab
        regs = _regs_from_g(g)
        name = lab.regions["name"]
        assert regs[32] == lab.symbol("full_name_hash")  # pc: stopped at the routine's entry
        assert regs[0:3] == [0, name.va + 4090, 6]  # the scenario's arguments
        assert regs[30] == lab.machine.return_sentinel
        assert regs[31] == lab.machine.kernel_stack_top
        assert (regs[33] >> 2) & 3 == 1  # cpsr: EL1
        assert gdb.reg(1) == name.va + 4090
        assert gdb.cmd("qC") == "QC1" and gdb.cmd("qfThreadInfo") == "m1" and gdb.cmd("qsThreadInfo") == "l"
        assert gdb.cmd("qAttached") == "1"
        assert gdb.cmd("vMustReplyEmpty") == ""  # unknown packets: the empty reply
        assert gdb.cmd("Z2,1000,4") == ""  # watchpoints: not supported
        assert gdb.cmd("vCont?").startswith("vCont;") and ";s" in gdb.cmd("vCont?")
        gdb.resume("c")  # stops at the abort (the default stop-on)
        gdb.cmd("D")
    finally:
        gdb.close()
    record = debugged.join()
    assert record.verdict.outcome == plain(ZEROPAD, "inject-reclaim").verdict.outcome


# ----------------------------------------------------------------- memory
def test_memory_reads_go_through_stage_1_and_writes_land_in_the_frame(tmp_path):
    debugged, gdb = _attach(tmp_path)
    try:
        gdb.cmd("?")
        lab = debugged.gdb.session.lab
        name = lab.regions["name"]
        # The name's bytes at a kernel linear-map VA, read from the frame directly as the reference.
        want = lab.machine.phys.read((name.pfns[0] << 12) + 4090, 6)
        assert want == b"pkvm.c"
        assert bytes.fromhex(gdb.cmd(f"m{name.va + 4090:x},6")) == want
        # A read crossing into the guest's page: the debugger sees through stage 1 whoever owns the frame.
        span = bytes.fromhex(gdb.cmd(f"m{name.va + 4090:x},{PAGE_SIZE:x}"))
        assert span == lab.machine.phys.read((name.pfns[0] << 12) + 4090, PAGE_SIZE - 4090) + lab.machine.phys.read(name.pfns[1] << 12, 4090)
        # Code: the routine's first instruction word, as assembled.
        image = lab.images[0]
        entry = lab.symbol("full_name_hash")
        assert bytes.fromhex(gdb.cmd(f"m{entry:x},4")) == image.data[entry - image.base : entry - image.base + 4]
        # Unmapped: E14; a read running off the end of a mapping: the mapped prefix.
        assert gdb.cmd("m1000,4") == "E14"
        end = name.va + 2 * PAGE_SIZE
        assert len(bytes.fromhex(gdb.cmd(f"m{end - 3:x},8"))) in (3, 8)  # 8 only if the next page happens to be mapped
        assert gdb.cmd("M1000,2:abcd") == "E14"
        # Writes: hex and binary (escaped '#'), read back from the frame.
        assert gdb.cmd(f"M{name.va:x},3:414243") == "OK"
        assert lab.machine.phys.read(name.pfns[0] << 12, 3) == b"ABC"
        assert gdb.cmd(b"X%x,3:}\x03}]z" % name.va) == "OK"
        assert lab.machine.phys.read(name.pfns[0] << 12, 3) == b"#}z"
        gdb.cmd("D")
    finally:
        gdb.close()
    debugged.join()


def test_register_writes_take_effect(tmp_path):
    debugged, gdb = _attach(tmp_path)
    try:
        gdb.cmd("?")
        cpu = debugged.gdb.session.machine.cpu
        assert gdb.cmd("P5=efbeadde00000000") == "OK"
        assert cpu.x(5) == 0xDEADBEEF and gdb.reg(5) == 0xDEADBEEF
        g = gdb.cmd("g")
        patched = g[: 7 * 16] + (0x1122).to_bytes(8, "little").hex() + g[8 * 16 :]
        assert gdb.cmd("G" + patched) == "OK"
        assert cpu.x(7) == 0x1122 and cpu.x(5) == 0xDEADBEEF
        assert gdb.cmd("P99=00") == "E16"  # no such register
        # FP/SIMD: v1 (regnum 46: after the core's 34 and our 11 EL1 registers), 128 bits little-endian;
        # the CPU's Q1 is the same register (Arm ARM: Q1 is the 128-bit view of V1).
        from unicorn import arm64_const as A

        v1 = (0x0123456789ABCDEF << 64) | 0xFEDCBA9876543210
        assert gdb.cmd("P2e=" + v1.to_bytes(16, "little").hex()) == "OK"
        assert cpu.uc.reg_read(A.UC_ARM64_REG_Q1) == v1 and gdb.reg(0x2E) == v1
        # The routine's name argument (x1): the start of the buffer - the word loads no longer reach the guest page.
        name = debugged.gdb.session.lab.regions["name"]
        assert gdb.cmd("P1=" + name.va.to_bytes(8, "little").hex()) == "OK"
        console, reply = gdb.resume("c")
        assert reply == "W00", (console, reply)
    finally:
        gdb.close()
    record = debugged.join()
    assert record.verdict.outcome == "returned"
    assert not record.result.events_of("protected-access")


def test_monitor_commands_answer_and_refuse_in_one_line(tmp_path, monkeypatch):
    import faultlab.gdb.session as session_module

    monkeypatch.setattr(session_module, "CONSOLE_CHUNK", 16)  # long output: many console packets, joined by gdb
    debugged, gdb = _attach(tmp_path)
    try:
        gdb.cmd("?")
        lab = debugged.gdb.session.lab
        text = gdb.monitor("help")
        assert all(kind in text for kind in ("abort", "inject", "fixup", "eret", "reclaim", "owner ADDR", "stop-on"))
        assert gdb.monitor("bogus") == "monitor: unknown command 'bogus' (monitor help)\n"
        assert gdb.monitor("owner nowhere").startswith("monitor owner: unknown name 'nowhere'")
        assert gdb.monitor("owner 0x1000") == "VA 0x1000: not mapped at stage 1\n"
        assert gdb.monitor("owner fault") == "monitor owner: no abort yet\n"
        assert gdb.monitor("stop-on sometimes").startswith("monitor stop-on: unknown event kind 'sometimes'")
        # Buffers by name, as in scenario files: the guest's page and the host's.
        guest_page = gdb.monitor("owner name+4096")
        assert f"pfn {lab.regions['name'].pfns[1]:#x}" in guest_page and "owner guest" in guest_page and "OWNED" in guest_page
        assert "owner host" in gdb.monitor("owner name")
        assert "gfn" in gdb.monitor("guest") and "OWNED" in gdb.monitor("guest")
        assert gdb.monitor("events") == "no events yet\n"  # only housekeeping so far: the idmap of the code page
        assert "idmap" in gdb.monitor("events all")
        assert "EL1 PAN=1" in gdb.monitor("el1")
        assert "ESR_EL2 = 0x0000000092000007" in gdb.monitor("explain 0x92000007 2")
        gdb.cmd("D")
    finally:
        gdb.close()
    debugged.join()


# --------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    "spec, host, port",
    [("1234", "127.0.0.1", 1234), (":1234", "127.0.0.1", 1234), ("0.0.0.0:99", "0.0.0.0", 99), ("[::1]:5", "::1", 5), ("localhost:0", "localhost", 0)],
)
def test_address_parsing(spec, host, port):
    assert Address.parse(spec) == Address(host, port)


@pytest.mark.parametrize("spec", ["", "abc", "127.0.0.1:", "1:2:x", "70000", "-1"])
def test_bad_addresses_are_usage_errors(spec):
    with pytest.raises(GdbUsageError):
        Address.parse(spec)


def test_binds_loopback_by_default_and_reports_a_busy_port():
    listener = Listener(Address.parse("0"))
    try:
        assert listener.address.host == "127.0.0.1" and listener.address.port > 0
        with pytest.raises(GdbUsageError, match="cannot listen"):
            Listener(Address("127.0.0.1", listener.address.port))
    finally:
        listener.close()


def test_connect_command_loads_every_symbol_file(tmp_path):
    cmd = connect_command([tmp_path / "vmlinux", tmp_path / "a b.elf"], Address("127.0.0.1", 7))
    assert cmd.startswith("gdb-multiarch -q -ex ") and "'file " in cmd and "'add-symbol-file " in cmd
    assert cmd.endswith("-ex 'target remote 127.0.0.1:7'")


def test_no_debugger_no_hook():
    lab = Lab("inject")
    assert lab.machine.debugger is None
    gdb = GdbAttach("0", name="x", out=io.StringIO())
    gdb.finish(plain(ZEROPAD, "inject").result)  # never attached: closes its socket
    assert gdb.listener.sock.fileno() == -1


# ------------------------------------------------------------- command line
@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", ZEROPAD, "--policy", "inject", "--gdb", "nonsense"], "want [HOST:]PORT"),
        (["run", ZEROPAD, "--gdb", "0"], "--gdb debugs one run, this asks for 7"),
        (["run", ZEROPAD, "--policy", "inject", "--policy", "panic", "--gdb", "0"], "choose one policy"),
        (["kernel", "call", "/nonexistent/vmlinux", "f", "--gdb", "host:port"], "want [HOST:]PORT"),
        (["run", ZEROPAD, "--policy", "inject", "--gdb", "192.0.2.1:0"], "cannot listen"),  # TEST-NET: not ours
    ],
)
def test_cli_bad_gdb_requests_are_one_line_exit_2(argv, words, capsys):
    from faultlab.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
