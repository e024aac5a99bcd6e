/* Helpers in the style of the kernel's asm/assembler.h, written for the assembler tests. */
#define EFAULT 14
#define PAIR_BYTES (2 * 8)

	// load one byte from user memory and advance the pointer
	.macro uld_byte reg, ptr, fixup
	USER(\fixup, ldtrb \reg, [\ptr])
	add \ptr, \ptr, #1
	.endm

	// store one byte and advance, with an explicit exception-table annotation
	.macro ust_byte reg, ptr, fixup
8888:	sttrb \reg, [\ptr]
	add \ptr, \ptr, #1
	_asm_extable_uaccess 8888b, \fixup
	.endm
