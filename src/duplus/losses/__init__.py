"""Loss functions: partial-label segmentation losses and the Cox partial likelihood."""
