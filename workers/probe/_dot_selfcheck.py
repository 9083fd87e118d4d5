"""``python -m workers.probe._dot_selfcheck PATH [MCPU]``: the dot-product self-check
(:func:`workers.probe.dot_check.self_check`) in a process of its own: an illegal instruction
kills it, not the caller."""

import sys

from workers.probe.dot_check import self_check

if __name__ == "__main__":
    self_check(sys.argv[1], *sys.argv[2:3])
