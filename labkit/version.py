"""labkit's version, in a module of its own so that code below the front doors can name it
without importing the top-level package."""

__version__ = "0.1.0"
