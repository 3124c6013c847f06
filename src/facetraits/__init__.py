"""facetraits: learn, explain and map how people judge faces."""

__version__ = "0.1.0"
