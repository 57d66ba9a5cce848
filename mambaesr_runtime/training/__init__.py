"""Training (needs torch): data and degradation, losses, the teacher/student distillation loop, experiment records."""
