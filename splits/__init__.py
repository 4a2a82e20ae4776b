"""slidemil splits package."""
