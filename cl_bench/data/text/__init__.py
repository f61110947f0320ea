"""Text datasets: corpora, bitext, STS, TruthfulQA, and the in-memory views."""
