"""Reading the committed notebooks as JSON, for the static tests (no kernel, no nbformat)."""
import json


def text(v):
    "A notebook's text field (a cell's source, an output's text) as one string: it may be stored as a list of lines."
    return ''.join(v) if isinstance(v, list) else (v or '')


def source(cell): return text(cell.get('source'))


def load(path): return json.loads(path.read_text(encoding='utf-8'))
