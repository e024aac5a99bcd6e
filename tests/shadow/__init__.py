"""Independent references the tests compare the model against (written from the kernel, never calling hyp/)."""
