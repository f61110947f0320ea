"""Evaluation protocols (registered as ``protocol``): each a function (model, data, params, ctx) -> result."""
