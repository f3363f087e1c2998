"""The ``duplus`` command line: a thin layer that parses, builds a config and calls library code.

Heavy libraries (torch, MONAI, transformers) are imported inside the command functions, so
``duplus --help`` is instant. Every user error is a :class:`~duplus.errors.DuplusError`, printed as
one line ``duplus: error: <file>: <problem>`` with exit status 2. An ``OSError`` (a full disk,
permissions) is printed the same way with exit status 1, and so is any other exception (a bug);
``--verbose`` shows their tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence

from duplus.cli.parsers import build_parser
from duplus.errors import DuplusError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (
        logging.DEBUG if args.verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger().setLevel(level)
    for noisy in ("transformers", "httpx", "urllib3", "matplotlib", "PIL", "highdicom", "openjpeg"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.captureWarnings(False)  # re-installed on each call: main() may run many times in one process
    logging.captureWarnings(True)  # library warnings (numpy, MONAI, torch) go through logging
    # nibabel and pydicom log (to their own stderr handlers) how they "fix" odd headers or fail on a
    # damaged file; DuPLUS checks those files itself and says what matters in one line
    for noisy in ("nibabel", "pydicom", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if args.verbose else logging.CRITICAL)
    try:
        return int(args.func(args))
    except DuplusError as exc:
        _print_error(str(exc))
        return 2
    except OSError as exc:  # the environment failed: a full disk, a vanished file, permissions
        if args.verbose:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _print_error(f"{where}{exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        print("duplus: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback with --verbose
        if args.verbose:
            raise
        _print_error(f"internal error ({type(exc).__name__}: {exc}); rerun with --verbose for the traceback")
        return 1


def _print_error(message: str) -> None:
    """Print ``duplus: error: <message>`` as exactly one line on stderr."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", message).strip() or "unknown error"
    print(f"duplus: error: {text}", file=sys.stderr)
