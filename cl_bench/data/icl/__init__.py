"""In-context-learning datasets: random DFAs, linear regression, few-shot text classification."""
