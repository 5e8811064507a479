"""stackmatrix: which serving stack serves which model on which GPUs, with evidence."""

__version__ = "0.1.0"
