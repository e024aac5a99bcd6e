// Probes of the machine's fault paths (scripts/bench.py times them, tests/test_fast_fault_path.py
// compares the engine's path with the in-hook one): page touches that take lazy stage-2 idmaps, and
// a load whose protected-access abort the exception table fixes up each time. Not swept routines.
.text
SYM_FUNC_START(touch_pages)     // x0 = first page, x1 = pages: one load per page
1:  ldr x3, [x0]
    add x0, x0, #4096
    subs x1, x1, #1
    b.ne 1b
    ret
SYM_FUNC_END(touch_pages)
SYM_FUNC_START(touch_again)     // x0 = a page, x1 = times: a load that the extable fixes up each time
1:  mov x3, #0
2:  ldr x3, [x0]
3:  subs x1, x1, #1
    b.ne 1b
    mov x0, x2
    ret
    _asm_extable_uaccess_err_zero 2b, 3b, x2, x3
SYM_FUNC_END(touch_again)
SYM_FUNC_START(spin_touch)      // x0 = first page, x1 = pages, x2 = spins before each touch
1:  mov x4, x2
2:  subs x4, x4, #1
    b.ne 2b
    ldr x3, [x0]
    add x0, x0, #4096
    subs x1, x1, #1
    b.ne 1b
    ret
SYM_FUNC_END(spin_touch)
SYM_FUNC_START(mixed)           // x0 = first of 8 pages: accesses of every shape in one block, each to a fresh page
    ldr x3, [x0]
    str x3, [x0, #4096]
    add x11, x0, #8192
    ldrb w4, [x11, #1]
    add x5, x0, #12288
    ldp x6, x7, [x5, #-8]       // straddles pages 2 and 3
    add x5, x5, #4000
    ldr x8, [x5, #96]!          // pre-index: page 4
    str x8, [x5], #8            // post-index: page 4
    add x5, x5, #4088           // page 5
    ldadd x1, x2, [x5]          // LSE atomic: page 5
    add x9, x0, #24576
    stp x3, x4, [x9, #-8]       // straddles pages 5 and 6
    add x9, x9, #4096
    ldur w10, [x9, #-2]         // straddles pages 6 and 7
    ret
SYM_FUNC_END(mixed)
