"""Progress bars on a terminal (tqdm's conventions: count, rate, ETA, on stderr), and nothing in logs.

A pseudo-terminal that was never given a size (`script`, `docker run -t` without one, some CI runners) reports 0
columns and 0 rows; tqdm then hides every bar as below the screen's last row, so nothing shows. Such a terminal gets
$COLUMNS x $LINES, else 80 x 24, instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any


def progress_bar(*, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar on stderr, shown only when stderr is a terminal and `enabled`; `options` are tqdm's."""
    from tqdm import tqdm

    shown = enabled and sys.stderr.isatty()
    try:
        sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):
        sized = False
    fallback = shutil.get_terminal_size()  # $COLUMNS and $LINES, else 80 x 24
    width = {} if sized else {"ncols": fallback.columns, "nrows": fallback.lines, "dynamic_ncols": False}
    return tqdm(file=sys.stderr, disable=not shown, **{"dynamic_ncols": True, **options, **width})
