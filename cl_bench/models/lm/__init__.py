"""Causal and sequence language models, and contrastive scoring over them."""
