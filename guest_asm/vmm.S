/*
 * An EL0 VMM touching its guest's memory through its own user mapping,
 * written for pkvm-faultlab. Loaded with Lab.load_user_asm and run at EL0.
 *
 * With pKVM the VMM keeps its stage-1 mapping of memory it gave to a
 * protected guest; an access to it is refused at stage 2. With injection the
 * VMM gets a synchronous SIGSEGV (SEGV_ACCERR, si_addr = the faulting
 * address) that its handler can deal with: this one counts the fault,
 * records the address and resumes after the access, skipping it. Whether the
 * VMM gets that signal at all is one of the things the policies disagree on.
 *
 * Signal ABI of the host model (host/tasks.py): the handler is entered with
 * x0 = signo, x1 = si_addr, x2 = si_code, x3 = the faulting pc, x30 = a
 * restorer, every other register as interrupted; it returns (to the restorer)
 * with x0 = the pc to resume at (0 retries the access).
 *
 * The handler finds where to resume in vmm_fixups, a table of
 * (access, resume) address pairs: a user-space exception table.
 * x19 points at the fault record in every routine here:
 *   [x19]     number of faults handled
 *   [x19, 8]  si_addr of the last one
 */

#define SIGSEGV		11
#define NR_EXIT		93
#define NR_RT_SIGACTION	134

	.text

SYM_FUNC_START(vmm_sigsegv)
	ldr	x4, [x19]
	add	x4, x4, #1
	str	x4, [x19]
	str	x1, [x19, #8]
	adr	x5, vmm_fixups
	adr	x6, vmm_fixups_end
1:	cmp	x5, x6
	b.hs	2f
	ldp	x7, x8, [x5], #16
	cmp	x7, x3
	b.ne	1b
	mov	x0, x8
	ret
	// a fault we did not expect: die as a real VMM would
2:	mov	x0, #(128 + SIGSEGV)
	mov	x8, #NR_EXIT
	svc	#0
SYM_FUNC_END(vmm_sigsegv)

	// install vmm_sigsegv for SIGSEGV (clobbers x0, x1, x8)
	.macro	install_handler
	mov	x0, #SIGSEGV
	adr	x1, vmm_sigsegv
	mov	x8, #NR_RT_SIGACTION
	svc	#0
	.endm

/*
 * long vmm_main(void *guest_mem, size_t len, void *out) -> x0 = bytes read, x1 = faults
 *
 * Reads guest_mem[0..len) into out[0..len), 8 bytes at a time and the last
 * len % 8 one at a time; an access that faults is skipped (its bytes of
 * `out` are left alone) and not counted. The fault record is at out - 16.
 */
SYM_FUNC_START(vmm_main)
	stp	x19, x20, [sp, #-16]!
	mov	x9, x0				// guest_mem
	mov	x10, x1				// len
	mov	x11, x2				// out
	sub	x19, x2, #16
	stp	xzr, xzr, [x19]
	install_handler
	mov	x12, #0				// offset
	mov	x13, #0				// bytes read
1:	sub	x14, x10, x12
	cmp	x14, #8
	b.lo	3f
	add	x15, x9, x12
.Lvmm_rd8:
	ldr	x16, [x15]
	str	x16, [x11, x12]
	add	x13, x13, #8
.Lvmm_rd8_done:
	add	x12, x12, #8
	b	1b
3:	cmp	x12, x10
	b.hs	4f
	add	x15, x9, x12
.Lvmm_rd1:
	ldrb	w16, [x15]
	strb	w16, [x11, x12]
	add	x13, x13, #1
.Lvmm_rd1_done:
	add	x12, x12, #1
	b	3b
4:	mov	x0, x13
	ldr	x1, [x19]
	ldp	x19, x20, [sp], #16
	ret
SYM_FUNC_END(vmm_main)

/*
 * long vmm_write(void *guest_mem, size_t len, void *rec) -> x0 = bytes written, x1 = faults
 *
 * Writes a pattern over guest_mem[0..len): byte i gets 0x40 | ((i / 8) & 0x3f)
 * (whole words while 8 or more bytes remain, then single bytes); a store that
 * faults is skipped and not counted. The fault record is at rec, or on the
 * stack when rec is 0.
 */
SYM_FUNC_START(vmm_write)
	stp	x19, x20, [sp, #-32]!
	mov	x19, x2
	cbnz	x19, 0f
	add	x19, sp, #16
0:	stp	xzr, xzr, [x19]
	mov	x9, x0				// guest_mem
	mov	x10, x1				// len
	install_handler
	mov	x17, #0x0101010101010101
	mov	x12, #0				// offset
	mov	x13, #0				// bytes written
1:	sub	x14, x10, x12
	cmp	x14, #8
	b.lo	3f
	lsr	x16, x12, #3
	and	x16, x16, #0x3f
	orr	x16, x16, #0x40
	mul	x16, x16, x17
	add	x15, x9, x12
.Lvmm_wr8:
	str	x16, [x15]
	add	x13, x13, #8
.Lvmm_wr8_done:
	add	x12, x12, #8
	b	1b
3:	cmp	x12, x10
	b.hs	4f
	lsr	x16, x12, #3
	and	x16, x16, #0x3f
	orr	x16, x16, #0x40
	add	x15, x9, x12
.Lvmm_wr1:
	strb	w16, [x15]
	add	x13, x13, #1
.Lvmm_wr1_done:
	add	x12, x12, #1
	b	3b
4:	mov	x0, x13
	ldr	x1, [x19]
	ldp	x19, x20, [sp], #32
	ret
SYM_FUNC_END(vmm_write)

	.section .rodata
	.balign	8
vmm_fixups:
	.quad	.Lvmm_rd8, .Lvmm_rd8_done
	.quad	.Lvmm_rd1, .Lvmm_rd1_done
	.quad	.Lvmm_wr8, .Lvmm_wr8_done
	.quad	.Lvmm_wr1, .Lvmm_wr1_done
vmm_fixups_end:
