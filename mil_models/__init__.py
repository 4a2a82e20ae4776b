"""slidemil mil_models package."""
