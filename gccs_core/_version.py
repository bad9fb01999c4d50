"""The library version, in a leaf module so that modules recording it never import the package face."""

__version__ = "0.1.0"
