"""Training-side domain code: the digit-only label mask, the softmax-regression head, metrics during evaluation."""
