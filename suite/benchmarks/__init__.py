"""Benchmarks: the input pipeline against the step, our step against a peer, the fast-step
targets, and compute scaling with input size. Each writes CSV, Markdown and plots."""
