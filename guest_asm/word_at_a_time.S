/*
 * load_unaligned_zeropad and the word-at-a-time string code that relies on
 * it, written for pkvm-faultlab from the documented behaviour of
 * arch/arm64/include/asm/word-at-a-time.h, fs/namei.c (full_name_hash,
 * hashlen_string), fs/dcache.c (dentry_string_cmp) and lib/string.c
 * (strscpy). Our own code.
 *
 * load_unaligned_zeropad reads 8 bytes that may run past the end of the
 * data into a page that is not there. Its LOAD_UNALIGNED_ZEROPAD entry
 * makes the fault handler re-read the aligned word holding the first byte
 * and shift it, so the bytes past the fault read as zero. Callers only ever
 * use the bytes before the end of their data, so the zeros are harmless;
 * if the first byte itself is unreadable the re-read faults and the kernel
 * dies, as it should (the data itself was bad).
 *
 * Little-endian word-at-a-time helpers (asm-generic/word-at-a-time.h):
 *   has_zero(a)       = (a - 0x01..01) & ~a & 0x80..80: the lowest set bit
 *                       marks the first zero byte exactly
 *   zero mask         = ((bits - 1) & ~bits) >> 7: 0xff per byte before it
 *   find_zero(mask)   = fls64(mask) / 8: the index of the first zero byte
 *   bytemask(n)       = (1 << 8n) - 1 for n < 8: the first n bytes
 */

#define E2BIG		7
#define GOLDEN_RATIO_64	0x61C8864680B583EB

	// dst = the 8 bytes at [addr], with those past an unmapped page boundary as zero.
	// dst and addr must differ: the fixup reads addr after the fault.
	.macro	load_unaligned_zeropad, dst, addr
8880:	ldr	\dst, [\addr]
	_asm_extable_load_unaligned_zeropad 8880b, 8881f, \dst, \addr
8881:
	.endm

	// bits = has_zero(a), using the constants in x10 (0x01..01) and x11 (0x80..80)
	.macro	has_zero bits, a
	sub	\bits, \a, x10
	bic	\bits, \bits, \a
	and	\bits, \bits, x11
	.endm

	.macro	wat_constants
	mov	x10, #0x0101010101010101
	mov	x11, #0x8080808080808080
	.endm

	// mask = 0xff for each byte before the first zero byte marked in bits
	.macro	zero_bytemask mask, bits
	sub	\mask, \bits, #1
	bic	\mask, \mask, \bits
	lsr	\mask, \mask, #7
	.endm

	// idx = find_zero(mask): the number of 0xff bytes in mask (tmp is clobbered)
	.macro	find_zero idx, mask, tmp
	clz	\idx, \mask
	mov	\tmp, #64
	sub	\idx, \tmp, \idx
	lsr	\idx, \idx, #3
	.endm

	// mask = the low n bytes (n < 8); tmp is clobbered
	.macro	bytemask_from_count mask, n, tmp
	lsl	\tmp, \n, #3
	mov	\mask, #1
	lsl	\mask, \mask, \tmp
	sub	\mask, \mask, #1
	.endm

	// fs/namei.c HASH_MIX for 64-bit words: x ^= a; y ^= x; x = rol64(x, 12);
	// x += y; y = rol64(y, 45); y *= 9
	.macro	hash_mix x, y, a
	eor	\x, \x, \a
	eor	\y, \y, \x
	ror	\x, \x, #52
	add	\x, \x, \y
	ror	\y, \y, #19
	add	\y, \y, \y, lsl #3
	.endm

	// out = fold_hash(x, y): y ^= x * GOLDEN_RATIO_64; y *= GOLDEN_RATIO_64; >> 32
	.macro	fold_hash out, x, y, tmp, k
	mov	\k, #(GOLDEN_RATIO_64 & 0xffff)
	movk	\k, #((GOLDEN_RATIO_64 >> 16) & 0xffff), lsl #16
	movk	\k, #((GOLDEN_RATIO_64 >> 32) & 0xffff), lsl #32
	movk	\k, #((GOLDEN_RATIO_64 >> 48) & 0xffff), lsl #48
	mul	\tmp, \x, \k
	eor	\y, \y, \tmp
	mul	\y, \y, \k
	lsr	\out, \y, #32
	.endm

	.text

/* unsigned long load_unaligned_zeropad(const void *addr): the macro, callable. */
SYM_FUNC_START(load_unaligned_zeropad)
	mov	x1, x0
	load_unaligned_zeropad x0, x1
	ret
SYM_FUNC_END(load_unaligned_zeropad)

/*
 * unsigned int full_name_hash(const void *salt, const char *name, unsigned int len)
 *
 * Mixes whole words while at least 8 bytes remain; the last partial word is
 * loaded with load_unaligned_zeropad and only its first len bytes are used,
 * so the hash depends on name[0..len) alone. A name whose length is a
 * multiple of 8 is never over-read.
 */
SYM_FUNC_START(full_name_hash)
	mov	x3, #0				// x
	mov	x4, x0				// y = salt
	mov	w2, w2
	cbz	x2, 3f
1:	load_unaligned_zeropad x5, x1
	cmp	x2, #8
	b.lo	2f
	hash_mix x3, x4, x5
	add	x1, x1, #8
	subs	x2, x2, #8
	b.ne	1b
	b	3f
2:	bytemask_from_count x7, x2, x6
	and	x5, x5, x7
	eor	x3, x3, x5
3:	fold_hash x0, x3, x4, x6, x7
	ret
SYM_FUNC_END(full_name_hash)

/*
 * u64 hashlen_string(const void *salt, const char *name)
 *
 * Hash and length of a NUL-terminated name, as (len << 32) | hash, with the
 * same mixing as full_name_hash: full_name_hash(salt, name, len) is the low
 * half. Words are read until one holds the NUL, so up to 7 bytes after it
 * are read (and ignored).
 */
SYM_FUNC_START(hashlen_string)
	mov	x3, #0				// x
	mov	x4, x0				// y = salt
	mov	x2, #0				// len
	wat_constants
	b	2f
1:	hash_mix x3, x4, x5
	add	x2, x2, #8
2:	add	x6, x1, x2
	load_unaligned_zeropad x5, x6
	has_zero x8, x5
	cbz	x8, 1b
	zero_bytemask x9, x8
	and	x5, x5, x9
	eor	x3, x3, x5
	find_zero x12, x9, x13
	add	x2, x2, x12
	fold_hash x0, x3, x4, x6, x7
	orr	x0, x0, x2, lsl #32
	ret
SYM_FUNC_END(hashlen_string)

/*
 * int dentry_name_cmp(const unsigned char *cs, const unsigned char *ct, unsigned int tcount)
 *
 * d_same_name()'s compare: cs is the dentry's own name, word aligned and
 * padded, read with plain word loads; ct is the name being looked up, read
 * with load_unaligned_zeropad. Returns 0 when the first tcount bytes match,
 * 1 otherwise. Both first words are read even when tcount is 0.
 */
SYM_FUNC_START(dentry_name_cmp)
	mov	w2, w2
1:	ldr	x3, [x0]
	load_unaligned_zeropad x4, x1
	cmp	x2, #8
	b.lo	2f
	cmp	x3, x4
	b.ne	3f
	add	x0, x0, #8
	add	x1, x1, #8
	subs	x2, x2, #8
	b.ne	1b
	mov	x0, #0
	ret
2:	eor	x3, x3, x4
	bytemask_from_count x7, x2, x6
	tst	x3, x7
	cset	x0, ne
	ret
3:	mov	x0, #1
	ret
SYM_FUNC_END(dentry_name_cmp)

/*
 * ssize_t strscpy(char *dst, const char *src, size_t count)
 *
 * Copies the NUL-terminated src into dst[0..count): returns the length
 * copied (without the NUL), or -E2BIG if count is 0 or src does not fit,
 * in which case dst holds the first count - 1 bytes and a NUL.
 * Words are read with load_unaligned_zeropad while 8 or more bytes of
 * room remain (the word that holds the NUL is stored with zeros after the
 * NUL); the last count % 8 bytes are copied one at a time with plain loads.
 */
SYM_FUNC_START(strscpy)
	cbz	x2, 9f
	mov	x3, x0				// dst
	mov	x4, #0				// res
	mov	x5, x2				// room left
	wat_constants
1:	cmp	x5, #8
	b.lo	4f
	add	x6, x1, x4
	load_unaligned_zeropad x7, x6
	has_zero x8, x7
	cbnz	x8, 3f
	str	x7, [x3, x4]
	add	x4, x4, #8
	sub	x5, x5, #8
	b	1b
3:	zero_bytemask x9, x8
	and	x7, x7, x9
	str	x7, [x3, x4]
	find_zero x12, x9, x13
	add	x0, x4, x12
	ret
4:	cbz	x5, 6f
	ldrb	w7, [x1, x4]
	strb	w7, [x3, x4]
	cbz	w7, 5f
	add	x4, x4, #1
	sub	x5, x5, #1
	b	4b
5:	mov	x0, x4
	ret
	// no NUL within count: terminate at count - 1 (count >= 1 here)
6:	sub	x4, x4, #1
	strb	wzr, [x3, x4]
9:	mov	x0, #-E2BIG
	ret
SYM_FUNC_END(strscpy)
