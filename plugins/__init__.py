"""sparsekit's built-in plugins, registered through the ``sparsekit`` entry-point group."""
