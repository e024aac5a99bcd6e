/*
 * The case that motivated the forced-reclaim patch, written for pkvm-faultlab.
 *
 * A driver pins a user page with get_user_pages() and then reads or writes it
 * through a kernel mapping of that page (kmap/vmap, or the linear map) with a
 * plain memcpy. Nothing in that path expects a fault, so none of its accesses
 * has an exception-table entry: if the VMM has meanwhile donated the page to a
 * protected guest, an injected abort has nothing to fix it up and the host
 * dies - unless the fault path can take the page back (inject-reclaim).
 *
 * void *gup_kernel_copy(void *dst, const void *src, size_t n): memcpy, returns dst.
 */

dstin	.req	x0
src	.req	x1
count	.req	x2
tmp1	.req	x3
dst	.req	x6

	.macro	cpy1
	ldrb	w7, [src], #1
	strb	w7, [dst], #1
	.endm
	.macro	cpy2
	ldrh	w7, [src], #2
	strh	w7, [dst], #2
	.endm
	.macro	cpy4
	ldr	w7, [src], #4
	str	w7, [dst], #4
	.endm
	.macro	cpy8
	ldr	x7, [src], #8
	str	x7, [dst], #8
	.endm
	.macro	cpy16
	ldp	x7, x8, [src], #16
	stp	x7, x8, [dst], #16
	.endm
	.macro	cpy64
	ldp	x7, x8, [src], #16
	ldp	x9, x10, [src], #16
	ldp	x11, x12, [src], #16
	ldp	x13, x14, [src], #16
	stp	x7, x8, [dst], #16
	stp	x9, x10, [dst], #16
	stp	x11, x12, [dst], #16
	stp	x13, x14, [dst], #16
	.endm
alignp	.req	dst

	.text
SYM_FUNC_START(gup_kernel_copy)
	mov	dst, dstin
#include "include/copy_template.S"
	ret
SYM_FUNC_END(gup_kernel_copy)
