"""alignline: the Llama 2 alignment recipe as an assembly line."""
__version__ = "0.1.0"
