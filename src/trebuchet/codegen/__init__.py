"""Code generators: c.py (C + OpenMP), reference.py (torch ops, the oracle)."""
