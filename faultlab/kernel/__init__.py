"""Real Debian arm64 kernels: fetching them, and a lab that calls their functions."""
