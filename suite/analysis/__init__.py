"""Analysis: run folders into tables, plots and reports; compute scaling and benchmarks.

Reads run folders; never imports the trainer.
"""
