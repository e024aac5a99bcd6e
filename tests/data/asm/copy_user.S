/*
 * A byte-at-a-time user copy in the shape of the kernel's copy templates:
 * x0 = dst (user), x1 = src (user), x2 = n; returns the bytes not copied.
 */
#include "include/uaccess_macros.h"

dst	.req	x0
src	.req	x1
count	.req	x2
tmp	.req	w3

	.text
SYM_FUNC_START(copy_user_bytes)
	mov	x4, dst
	cbz	count, 2f
1:	uld_byte tmp, src, 9f
	ust_byte tmp, dst, 9f
	subs	count, count, #1
	b.ne	1b
2:	mov	x0, #0
	ret
	// fixup: bytes not copied = count still to go
9:	mov	x0, count
	ret
SYM_FUNC_END(copy_user_bytes)

	.section .rodata
SYM_DATA_START(copy_user_magic)
	.quad	PAIR_BYTES, -EFAULT
SYM_DATA_END(copy_user_magic)
