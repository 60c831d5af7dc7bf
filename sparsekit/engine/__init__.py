"""sparsekit."""
