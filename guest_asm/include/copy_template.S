/*
 * The body of a forward copy, shared by __arch_copy_{from,to}_user and the
 * plain kernel memcpy of gup.S (the kernel shares arch/arm64/lib/copy_template.S
 * the same way). Our own layout:
 *
 *   in:  dst (x6) destination cursor, src (x1) source cursor, count (x2) bytes
 *   out: falls through at the end with both cursors advanced by count
 *
 * The including file defines, before the #include, one macro per unit:
 *   cpy1 / cpy2 / cpy4 / cpy8 / cpy16 / cpy64
 * each copying that many bytes from [src] to [dst] and advancing both
 * cursors, and .req `alignp` to the cursor the prologue aligns (the user side
 * in the uaccess copies, so every user access of 16 bytes or more is aligned).
 *
 * Order is strictly ascending in the address space, and each unit advances
 * `dst` only once its stores are done: a fixup can then report
 * `end - dst` as the bytes not copied without ever overstating progress.
 *
 * Shape: copies of fewer than 16 bytes go straight to the 8/4/2/1 tail.
 * Otherwise a prologue copies 1, 2, 4 then 8 bytes as needed to bring
 * `alignp` to a 16-byte boundary (ascending sizes keep each of them
 * naturally aligned), a loop copies 64 bytes per iteration, and a tail copies
 * the remaining 32/16/8/4/2/1 bytes by testing the bits of count.
 */
	cmp	count, #16
	b.lo	15f

	neg	tmp1, alignp
	ands	tmp1, tmp1, #15
	b.eq	12f
	sub	count, count, tmp1
	tbz	tmp1, #0, 10f
	cpy1
10:	tbz	tmp1, #1, 10f
	cpy2
10:	tbz	tmp1, #2, 10f
	cpy4
10:	tbz	tmp1, #3, 12f
	cpy8

12:	cmp	count, #64
	b.lo	14f
13:	cpy64
	sub	count, count, #64
	cmp	count, #64
	b.hs	13b

14:	tbz	count, #5, 10f
	cpy16
	cpy16
10:	tbz	count, #4, 15f
	cpy16

15:	tbz	count, #3, 10f
	cpy8
10:	tbz	count, #2, 10f
	cpy4
10:	tbz	count, #1, 10f
	cpy2
10:	tbz	count, #0, 19f
	cpy1
19:
