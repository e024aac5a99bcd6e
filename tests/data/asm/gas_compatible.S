// Plain instructions that GNU as and this assembler must encode identically.
	.text
start:
	mov	x0, #1
	movz	x1, #0x1234, lsl #16
	movk	x1, #0xbeef
	add	x2, x0, x1, lsl #3
	ldp	x29, x30, [sp], #16
	stp	x29, x30, [sp, #-16]!
	ldr	w3, [x1, #4]
	ldtr	x4, [x1, #8]
	sttrh	w4, [x0]
	ldaxr	x5, [x2]
	stlxr	w6, x5, [x2]
	ldadd	x0, x1, [x2]
	ldaddal	w0, w1, [x2]
	stclrl	x3, [sp]
	swpalb	w7, w8, [x9]
	casal	x10, x11, [x12]
	caspa	x14, x15, x16, x17, [x18]
	ldapr	x0, [x1]
	ldaprh	w0, [x1]
	paciasp
	autiasp
	bti	c
	bti	jc
	xpaclri
	csdb
	sb
	msr	pan, #1
	msr	daifset, #0xf
	mrs	x0, esr_el1
	mrs	x1, pan
	msr	vbar_el1, x2
	dc	civac, x0
	dc	cvap, x1
	at	s1e1r, x0
	hvc	#0
	brk	#0x800
	dsb	ish
	isb
1:	subs	x0, x0, #1
	b.ne	1b
	cbz	x0, 2f
	tbnz	w1, #31, 1b
	bl	start
2:	adr	x3, 1b
	ld1	{v0.16b, v1.16b}, [x1], #32
	ldr	q0, [x1, #16]
	rev	x0, x1
	clz	w0, w1
	csel	x0, x1, x2, hi
	eret
