"""modelmon: production monitoring for ML models."""
