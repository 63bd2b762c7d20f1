"""The version of jaxrnn, read by setuptools and by ``jaxrnn.__version__``."""

__version__ = "0.1.0"
