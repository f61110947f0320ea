"""Model adapters behind small interfaces (registered as ``arch``)."""
