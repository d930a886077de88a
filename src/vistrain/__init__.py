"""vistrain: a folder of labelled images in, a trained, inspected and deployable classifier out."""

from importlib.metadata import version

__version__ = version("vistrain")
