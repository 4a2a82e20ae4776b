"""slidemil extract package."""
