/*
 * Host-kernel user-access routines, written for pkvm-faultlab in the shape of
 * arch/arm64/lib/*.S and arch/arm64/include/asm/uaccess.h, from their
 * documented contracts (include/linux/uaccess.h, mm/maccess.c,
 * lib/strncpy_from_user.c, lib/strnlen_user.c). Our own code.
 *
 * Every user-side access is an unprivileged ldtr/sttr (so PAN does not stop
 * it and the access is checked with EL0 permissions), annotated with an
 * exception-table entry; kernel-side accesses are plain and have none, as in
 * the kernel: a kernel-side fault inside a uaccess routine is a kernel bug.
 *
 * Register conventions of the copies (the template reads them by name):
 *   x0 dstin (and the return value), x1 src, x2 count, x3 tmp1,
 *   x4 end (one past the last byte of the destination), x5 srcin,
 *   x6 dst (destination cursor), x7-x14 data.
 */

#define EFAULT	14
#define EAGAIN	11

dstin	.req	x0
src	.req	x1
count	.req	x2
tmp1	.req	x3
end	.req	x4
srcin	.req	x5
dst	.req	x6

	.text

/* ------------------------------------------------------------------------
 * unsigned long __arch_copy_from_user(void *to, const void __user *from, unsigned long n)
 *
 * Returns the number of bytes not copied. Bytes [0, n - ret) of `to` hold
 * the source; nothing at or past `to + n - ret` is stored. The user side is
 * the one the prologue aligns, so every user load of 16 bytes or more is
 * aligned and never straddles a page.
 */
	.macro	cpy1
	USER(9997f, ldtrb w7, [src])
	add	src, src, #1
	strb	w7, [dst], #1
	.endm
	.macro	cpy2
	USER(9997f, ldtrh w7, [src])
	add	src, src, #2
	strh	w7, [dst], #2
	.endm
	.macro	cpy4
	USER(9997f, ldtr w7, [src])
	add	src, src, #4
	str	w7, [dst], #4
	.endm
	.macro	cpy8
	USER(9997f, ldtr x7, [src])
	add	src, src, #8
	str	x7, [dst], #8
	.endm
	.macro	cpy16
	USER(9997f, ldtr x7, [src])
	USER(9997f, ldtr x8, [src, #8])
	add	src, src, #16
	stp	x7, x8, [dst], #16
	.endm
	// 64 bytes: all eight loads first (the user side may fault), then the stores
	.macro	cpy64
	USER(9997f, ldtr x7, [src])
	USER(9997f, ldtr x8, [src, #8])
	USER(9997f, ldtr x9, [src, #16])
	USER(9997f, ldtr x10, [src, #24])
	USER(9997f, ldtr x11, [src, #32])
	USER(9997f, ldtr x12, [src, #40])
	USER(9997f, ldtr x13, [src, #48])
	USER(9997f, ldtr x14, [src, #56])
	add	src, src, #64
	stp	x7, x8, [dst], #16
	stp	x9, x10, [dst], #16
	stp	x11, x12, [dst], #16
	stp	x13, x14, [dst], #16
	.endm
alignp	.req	src

SYM_FUNC_START(__arch_copy_from_user)
	add	end, dstin, count
	mov	srcin, src
	mov	dst, dstin
#include "include/copy_template.S"
	mov	x0, #0
	ret

	// A user load faulted: dst covers exactly what was stored.
9997:	cmp	dst, dstin
	b.ne	9998f
	// Nothing copied: before reporting "nothing", try a single byte, so a
	// caller that retries after faulting the page in always makes progress.
	USER(9998f, ldtrb w7, [srcin])
	strb	w7, [dst], #1
9998:	sub	x0, end, dst
	ret
SYM_FUNC_END(__arch_copy_from_user)

	.purgem	cpy1
	.purgem	cpy2
	.purgem	cpy4
	.purgem	cpy8
	.purgem	cpy16
	.purgem	cpy64
	.unreq	alignp

/* ------------------------------------------------------------------------
 * unsigned long __arch_copy_to_user(void __user *to, const void *from, unsigned long n)
 *
 * Returns the number of bytes not copied. Stores go through sttr, 16 bytes
 * as two sttr then one cursor update; with the user side 16-byte aligned
 * both halves sit in one page, so the first of them is the one that faults.
 * An unaligned store in the short path can straddle a page: the bytes it
 * wrote before the fault are not counted as copied.
 */
	.macro	cpy1
	ldrb	w7, [src], #1
	USER(9997f, sttrb w7, [dst])
	add	dst, dst, #1
	.endm
	.macro	cpy2
	ldrh	w7, [src], #2
	USER(9997f, sttrh w7, [dst])
	add	dst, dst, #2
	.endm
	.macro	cpy4
	ldr	w7, [src], #4
	USER(9997f, sttr w7, [dst])
	add	dst, dst, #4
	.endm
	.macro	cpy8
	ldr	x7, [src], #8
	USER(9997f, sttr x7, [dst])
	add	dst, dst, #8
	.endm
	.macro	ust16 a, b
	USER(9997f, sttr \a, [dst])
	USER(9997f, sttr \b, [dst, #8])
	add	dst, dst, #16
	.endm
	.macro	cpy16
	ldp	x7, x8, [src], #16
	ust16	x7, x8
	.endm
	.macro	cpy64
	ldp	x7, x8, [src], #16
	ldp	x9, x10, [src], #16
	ldp	x11, x12, [src], #16
	ldp	x13, x14, [src], #16
	ust16	x7, x8
	ust16	x9, x10
	ust16	x11, x12
	ust16	x13, x14
	.endm
alignp	.req	dst

SYM_FUNC_START(__arch_copy_to_user)
	add	end, dstin, count
	mov	srcin, src
	mov	dst, dstin
#include "include/copy_template.S"
	mov	x0, #0
	ret

9997:	cmp	dst, dstin
	b.ne	9998f
	// Nothing copied: try a single byte before giving up (see copy_from_user).
	ldrb	w7, [srcin]
	USER(9998f, sttrb w7, [dst])
	add	dst, dst, #1
9998:	sub	x0, end, dst
	ret
SYM_FUNC_END(__arch_copy_to_user)

	.purgem	cpy1
	.purgem	cpy2
	.purgem	cpy4
	.purgem	cpy8
	.purgem	cpy16
	.purgem	cpy64
	.purgem	ust16
	.unreq	alignp

/* ------------------------------------------------------------------------
 * unsigned long __arch_clear_user(void __user *addr, unsigned long n)
 *
 * Returns the number of bytes not cleared; bytes [0, n - ret) are zero.
 * Same shape as the copies: short sizes go to the tail, longer ones align
 * the cursor to 16, clear 64 bytes per iteration, then the tail.
 */
	.macro	uclr sz, insn, reg
	USER(9f, \insn \reg, [x3])
	add	x3, x3, #\sz
	.endm
	.macro	uclr16
	USER(9f, sttr xzr, [x3])
	USER(9f, sttr xzr, [x3, #8])
	add	x3, x3, #16
	.endm

SYM_FUNC_START(__arch_clear_user)
	add	x2, x0, x1			// end
	mov	x3, x0				// cursor
	cmp	x1, #16
	b.lo	5f
	neg	x4, x3
	ands	x4, x4, #15
	b.eq	2f
	sub	x1, x1, x4
	tbz	x4, #0, 1f
	uclr	1, sttrb, wzr
1:	tbz	x4, #1, 1f
	uclr	2, sttrh, wzr
1:	tbz	x4, #2, 1f
	uclr	4, sttr, wzr
1:	tbz	x4, #3, 2f
	uclr	8, sttr, xzr
2:	cmp	x1, #64
	b.lo	4f
3:	uclr16
	uclr16
	uclr16
	uclr16
	sub	x1, x1, #64
	cmp	x1, #64
	b.hs	3b
4:	tbz	x1, #5, 1f
	uclr16
	uclr16
1:	tbz	x1, #4, 5f
	uclr16
5:	tbz	x1, #3, 1f
	uclr	8, sttr, xzr
1:	tbz	x1, #2, 1f
	uclr	4, sttr, wzr
1:	tbz	x1, #1, 1f
	uclr	2, sttrh, wzr
1:	tbz	x1, #0, 1f
	uclr	1, sttrb, wzr
1:	mov	x0, #0
	ret
9:	sub	x0, x2, x3
	ret
SYM_FUNC_END(__arch_clear_user)

	.purgem	uclr
	.purgem	uclr16

/* ------------------------------------------------------------------------
 * get_user_N(const void __user *uaddr) -> x0 = 0 or -EFAULT, x1 = value (0 on a fault)
 * put_user_N(value, void __user *uaddr) -> x0 = 0 or -EFAULT
 *
 * uaccess.h __get_user_asm/__put_user_asm: one unprivileged access whose
 * UACCESS_ERR_ZERO entry writes -EFAULT to the error register, zeroes the
 * value register and resumes at the next instruction.
 */
	.macro	def_get_user sz, insn, reg
SYM_FUNC_START(get_user_\sz)
	mov	x2, x0
	mov	x0, #0
1:	\insn	\reg, [x2]
2:	ret
	_asm_extable_uaccess_err_zero 1b, 2b, x0, x1
SYM_FUNC_END(get_user_\sz)
	.endm

	.macro	def_put_user sz, insn, reg
SYM_FUNC_START(put_user_\sz)
	mov	x2, x0
	mov	x0, #0
1:	\insn	\reg, [x1]
2:	ret
	_asm_extable_uaccess_err_zero 1b, 2b, x0, xzr
SYM_FUNC_END(put_user_\sz)
	.endm

	def_get_user 1, ldtrb, w1
	def_get_user 2, ldtrh, w1
	def_get_user 4, ldtr, w1
	def_get_user 8, ldtr, x1
	def_put_user 1, sttrb, w2
	def_put_user 2, sttrh, w2
	def_put_user 4, sttr, w2
	def_put_user 8, sttr, x2

/* ------------------------------------------------------------------------
 * long copy_from_kernel_nofault(void *dst, const void *src, size_t n)
 * long copy_to_kernel_nofault(void *dst, const void *src, size_t n)
 *
 * mm/maccess.c: copy 8 bytes at a time, then 4, 2, 1; the side that may be
 * bad is accessed with a KACCESS_ERR_ZERO entry (__get/__put_kernel_nofault),
 * the other side plainly. Returns 0, or -EFAULT with a prefix of whole
 * chunks already copied.
 */
	// one chunk: \ld from [x1], \st to [x3]; \bad says which side has the entry
	.macro	nofault_chunk sz, ld, st, reg, bad
	.if	\bad == 0
8888:	\ld	\reg, [x1]
	_asm_extable_kaccess_err_zero 8888b, 9f, x0, x4
	\st	\reg, [x3]
	.else
	\ld	\reg, [x1]
8888:	\st	\reg, [x3]
	_asm_extable_kaccess_err_zero 8888b, 9f, x0, xzr
	.endif
	add	x1, x1, #\sz
	add	x3, x3, #\sz
	sub	x2, x2, #\sz
	.endm

	.macro	def_nofault name, bad
SYM_FUNC_START(\name)
	mov	x3, x0
	mov	x0, #0
	cmp	x2, #8
	b.lo	2f
1:	nofault_chunk 8, ldr, str, x4, \bad
	cmp	x2, #8
	b.hs	1b
2:	tbz	x2, #2, 3f
	nofault_chunk 4, ldr, str, w4, \bad
3:	tbz	x2, #1, 4f
	nofault_chunk 2, ldrh, strh, w4, \bad
4:	tbz	x2, #0, 9f
	nofault_chunk 1, ldrb, strb, w4, \bad
9:	ret
SYM_FUNC_END(\name)
	.endm

	def_nofault copy_from_kernel_nofault, 0
	def_nofault copy_to_kernel_nofault, 1

/* ------------------------------------------------------------------------
 * long strncpy_from_user(char *dst, const char __user *src, long count)
 *
 * lib/strncpy_from_user.c, word at a time: returns the length of the string
 * (without the NUL) if a NUL is found in the first `count` bytes, `count`
 * if not, -EFAULT if a byte it needed could not be read. A word load that
 * faults is not an error yet: the copy falls back to one byte at a time from
 * the same position, and only a byte that faults is. In the word loop the
 * bytes of the last word after the NUL are stored as zero.
 *
 * x3 dst, x1 src, x4 res, x5 max (bytes left), x10/x11 the has_zero constants.
 */
SYM_FUNC_START(strncpy_from_user)
	mov	x3, x0
	mov	x4, #0
	mov	x5, x2
	mov	x10, #0x0101010101010101
	mov	x11, #0x8080808080808080
1:	cmp	x5, #8
	b.lo	4f
	add	x6, x1, x4
2:	ldtr	x7, [x6]
	_asm_extable_uaccess 2b, 4f
	// has_zero: (c - 0x01..01) & ~c & 0x80..80 marks the first zero byte exactly
	sub	x8, x7, x10
	bic	x8, x8, x7
	and	x8, x8, x11
	cbnz	x8, 3f
	str	x7, [x3, x4]
	add	x4, x4, #8
	sub	x5, x5, #8
	b	1b
	// the word holds the NUL: keep the bytes before it, zero the rest
3:	sub	x9, x8, #1
	bic	x9, x9, x8
	lsr	x9, x9, #7			// 0xff for each byte before the NUL
	and	x7, x7, x9
	str	x7, [x3, x4]
	clz	x9, x9
	mov	x12, #64
	sub	x9, x12, x9
	add	x0, x4, x9, lsr #3
	ret
	// byte at a time: after a word fault, or for the last count % 8 bytes
4:	cbz	x5, 6f
	add	x6, x1, x4
5:	ldtrb	w7, [x6]
	_asm_extable_uaccess 5b, 7f
	strb	w7, [x3, x4]
	cbz	w7, 6f
	add	x4, x4, #1
	sub	x5, x5, #1
	b	4b
6:	mov	x0, x4
	ret
7:	mov	x0, #-EFAULT
	ret
SYM_FUNC_END(strncpy_from_user)

/* ------------------------------------------------------------------------
 * long strnlen_user(const char __user *src, long count)
 *
 * lib/strnlen_user.c: the size of the string including its NUL if the NUL
 * is in the first `count` bytes, count + 1 if it is not, 0 on a fault (or
 * count <= 0). Every load is an aligned word, so a load never straddles a
 * page and no byte past the word holding src[count - 1] is read; the bytes
 * of the first word before src are forced non-zero.
 *
 * x1 aligned cursor, x2 align, x3 bytes left to examine (count + align),
 * x4 res (offset of the current word), x10/x11 the has_zero constants.
 */
SYM_FUNC_START(strnlen_user)
	mov	x9, x1				// count
	cmp	x9, #0
	b.le	8f
	and	x2, x0, #7
	and	x1, x0, #~7
	add	x3, x9, x2
	mov	x4, #0
	mov	x10, #0x0101010101010101
	mov	x11, #0x8080808080808080
1:	ldtr	x7, [x1]
	_asm_extable_uaccess 1b, 8f
	cbz	x4, 2f
	b	3f
	// first word: the `align` bytes before src must not look like a NUL
2:	lsl	x12, x2, #3
	mov	x13, #1
	lsl	x13, x13, x12
	sub	x13, x13, #1			// 0xff for each byte before src
	orr	x7, x7, x13
3:	sub	x8, x7, x10
	bic	x8, x8, x7
	and	x8, x8, x11
	cbnz	x8, 5f
	add	x4, x4, #8
	cmp	x3, #8
	b.ls	6f				// that was the word holding src[count - 1]
	sub	x3, x3, #8
	add	x1, x1, #8
	b	1b
	// found: length = res + index of the NUL + 1 - align, unless past count
5:	sub	x12, x8, #1
	bic	x12, x12, x8			// the bits below the first 0x80 marker
	clz	x12, x12
	mov	x13, #64
	sub	x12, x13, x12			// 8 * index + 7
	add	x0, x4, x12, lsr #3		// res + index
	sub	x0, x0, x2
	cmp	x0, x9
	b.hs	7f
	add	x0, x0, #1
	ret
6:	// no NUL in the first count bytes
7:	add	x0, x9, #1
	ret
8:	mov	x0, #0
	ret
SYM_FUNC_END(strnlen_user)

/* ------------------------------------------------------------------------
 * futex_atomic_add_lse(u32 __user *uaddr, int inc) -> x0 = 0 or -EFAULT, x1 = old value
 * futex_atomic_add_llsc(u32 __user *uaddr, int inc) -> x0 = 0, -EFAULT or -EAGAIN, x1 = old
 *
 * asm/futex.h: there are no unprivileged atomics (before FEAT_LSUI), so the
 * access runs with PAN cleared (uaccess_enable_privileged) and a plain
 * exclusive or LSE atomic, each annotated so a fault gives -EFAULT and a
 * zero old value. The LL/SC loop gives up with -EAGAIN after 128 failed
 * store-exclusives, as the kernel's FUTEX_MAX_LOOPS does.
 */
SYM_FUNC_START(futex_atomic_add_lse)
	mov	x2, x0
	mov	x0, #0
	msr	pan, #0
1:	ldaddal	w1, w3, [x2]
2:	msr	pan, #1
	mov	x1, x3
	ret
	_asm_extable_uaccess_err_zero 1b, 2b, x0, x3
SYM_FUNC_END(futex_atomic_add_lse)

SYM_FUNC_START(futex_atomic_add_llsc)
	mov	x2, x0
	mov	x0, #0
	mov	w6, #128
	msr	pan, #0
1:	ldxr	w3, [x2]
	add	w4, w3, w1
2:	stlxr	w5, w4, [x2]
	cbz	w5, 3f
	subs	w6, w6, #1
	b.ne	1b
	mov	x0, #-EAGAIN
3:	dmb	ish
	msr	pan, #1
	mov	x1, x3
	ret
	_asm_extable_uaccess_err_zero 1b, 3b, x0, x3
	_asm_extable_uaccess_err_zero 2b, 3b, x0, x3
SYM_FUNC_END(futex_atomic_add_llsc)
