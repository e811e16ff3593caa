"""Training jobs: one loop (``engine``) and what each stage adds to it (``segmentation``, ...)."""
