"""steiner: turn a base language model into an o1-style reasoner with the Steiner recipe."""

__version__ = "0.1.0"
