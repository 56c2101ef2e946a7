"""The IR: scalar expressions (expr.py) inside buffers (nodes.py)."""
