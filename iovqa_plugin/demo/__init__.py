"""The offline demo: the tiny test model, the demo quality ladder, and the quick-start run."""
