#!/usr/bin/env python3
"""Does a file hold exactly the source's table (what `neuralwiki fit` must print)?

    neuralwiki fit > fit.txt && python .ci/source_table.py fit.txt     # exit 1, showing the file, if not byte for byte
"""
import sys

from neuralwiki.gd import SOURCE_TABLE

if __name__ == '__main__':
    got = open(sys.argv[1], encoding='utf-8').read()
    sys.exit(0 if got == SOURCE_TABLE else f'{sys.argv[1]} is not the source\'s table, byte for byte:\n{got}')
