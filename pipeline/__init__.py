"""slidemil pipeline package."""
