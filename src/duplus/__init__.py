"""DuPLUS: dual-prompt, text-driven universal 3D medical image segmentation and prognosis."""

from duplus.errors import DuplusError, InputError

__version__ = "0.1.0"

__all__ = ["DuplusError", "InputError", "__version__"]
