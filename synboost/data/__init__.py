"""Leaves: readers, the synthetic world, image I/O, the label table, augmentations (numpy only, no torch)."""
