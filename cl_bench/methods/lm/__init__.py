"""Language-model and sequence-model training and adaptation."""
