"""Weights from elsewhere: DeepMind's released Perceiver IO pickle (read by a checked
unpickler that builds numeric arrays only) and Hugging Face's port, into run folders."""
