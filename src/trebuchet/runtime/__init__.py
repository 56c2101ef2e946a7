"""Runtime: the compile pipeline, C builds with a disk cache, and the wrapper."""
