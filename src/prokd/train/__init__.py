"""One training loop for supervised and distillation runs."""
