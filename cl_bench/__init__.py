"""cl_bench: a benchmark and evaluation harness for contrastive and in-context learning."""

__version__ = "0.1.0"
