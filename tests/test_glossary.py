"""Nothing is used before the chapter that teaches it.

`GLOSSARY` maps each chapter to the terms it teaches, each with the spellings that count as using it. For every
chapter notebook `nbs/NN_*.ipynb` (NN >= 1), the test scans the markdown cells and the code of every cell that is
not `#| hide` (what a reader sees), line by line, for a term taught in a LATER chapter. A line may name a later term
when it points ahead as such: it mentions "chapter N" (or "chapters 4 and 5", or links `0N_*.ipynb`) with N at least
the chapter that teaches the term ("chapter 4 will show how to find the gradient").

Matching is case-insensitive and whole-word: a spelling that starts (ends) with a letter or digit must not be
preceded (followed) by one, so "loss" matches `loss`, `Loss:` and `quad_loss` but not "lossless"; `_` counts as a
boundary. Spaces in a spelling match any run of spaces or hyphens ("learning rate", "learning-rate"). A flashcard's
id (`> **Card** `relu/gradient-at-zero``) is not checked: it never changes (Anki knows the card by it).

To extend (chapter 7, say): add `7: {'term': ['spelling', ...]}` below; nothing else changes.
"""
import json, re
from pathlib import Path

import pytest

from _notebooks import source, write_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

GLOSSARY = {
    1: {'tensor': ['tensor', 'tensors'],
        'matrix multiplication': ['matrix multiplication', 'matrix multiplications', 'matmul', 'matmuls'],
        'dot product': ['dot product', 'dot products'],
        'broadcasting': ['broadcasting']},
    2: {'ReLU': ['relu', 'relus', 'rectified linear']},
    3: {'loss': ['loss', 'losses'],
        'MAE': ['mae', 'mean absolute error'],
        'MSE': ['mse', 'mean squared error'],
        'residual': ['residual', 'residuals']},
    4: {'derivative': ['derivative', 'derivatives'],
        'gradient': ['gradient', 'gradients'],
        'backward': ['.backward(', 'backward()'],
        'requires_grad': ['requires_grad'],
        'no_grad': ['no_grad'],
        'learning rate': ['learning rate', 'learning rates']},
    5: {'autograd': ['autograd'],
        'computation graph': ['computation graph', 'computation graphs', 'computational graph', 'computational graphs'],
        'chain rule': ['chain rule']},
    6: {'softmax': ['softmax'],
        'cross-entropy': ['cross entropy', 'cross_entropy'],
        'minibatch': ['minibatch', 'minibatches', 'mini batch', 'mini batches'],
        'epoch': ['epoch', 'epochs'],
        'stochastic gradient descent': ['stochastic gradient descent', 'sgd']},
    7: {'all-reduce': ['all reduce', 'all_reduce', 'allreduce'],
        'world size': ['world size', 'world_size'],   # not 'rank': chapter 1 teaches a tensor's rank (its ndim)
        'shard': ['shard', 'shards'],
        'data parallel': ['data parallel', 'DistributedDataParallel', 'DDP']},
}


def spelling_re(s):
    "A regex for one spelling: case-insensitive, whole-word at ends that are letters or digits."
    body = r'[\s-]+'.join(re.escape(w) for w in s.split())
    left = r'(?<![A-Za-z0-9])' if s[0].isalnum() else ''
    right = r'(?![A-Za-z0-9])' if s[-1].isalnum() else ''
    return left + body + right

TERMS = [(ch, term, re.compile('|'.join(spelling_re(s) for s in spellings), re.I))
         for ch, terms in GLOSSARY.items() for term, spellings in terms.items()]

# "chapter 4", "Chapter 5's", "chapters 4 and 5", "chapters 4-6", and links to a chapter's notebook "04_gradient_descent.ipynb"
POINTER = re.compile(r'chapters?\s+(\d+(?:\s*(?:,|and|or|to|–|-)\s*\d+)*)', re.I)
LINK = re.compile(r'(?<![0-9])(\d\d)_\w+\.ipynb')
# A flashcard's id (`> **Card** `relu/gradient-at-zero``) is its identity in Anki forever: not prose, never checked.
CARD_ID = re.compile(r'^(\s*>\s*\*\*(?:Card|Cloze)\*\*\s*)`[^`]*`')


def chapters_pointed_at(line):
    nums = [int(n) for m in POINTER.finditer(line) for n in re.findall(r'\d+', m.group(1))]
    return nums + [int(m.group(1)) for m in LINK.finditer(line)]


def chapter_of(path):
    m = re.match(r'(\d+)_', path.name)
    return int(m.group(1)) if m else None


def visible_lines(cell):
    "(line number, line) a reader sees: markdown, or code of a cell that is not `#| hide` (directive lines dropped)."
    lines = source(cell).splitlines()
    if cell['cell_type'] == 'code':
        if any(re.match(r'#\|\s*hide\s*$', l) for l in lines): return []
        return [(n, l) for n, l in enumerate(lines, 1) if not l.startswith('#|')]
    if cell['cell_type'] != 'markdown': return []
    return [(n, CARD_ID.sub(r'\1', l)) for n, l in enumerate(lines, 1)]


def early_terms(path, chapter=None):
    "Each use in the notebook at `path` of a term that a later chapter teaches, as a readable line."
    chapter = chapter_of(path) if chapter is None else chapter
    nb = json.loads(path.read_text(encoding='utf-8'))
    found = []
    for i, cell in enumerate(nb['cells']):
        for n, line in visible_lines(cell):
            later = [(ch, term, m) for ch, term, rx in TERMS if ch > chapter for m in [rx.search(line)] if m]
            if not later: continue
            ahead = chapters_pointed_at(line)
            for ch, term, m in later:
                if any(p >= ch for p in ahead): continue
                found.append(f"{path.relative_to(ROOT)} cell {i} (id {cell.get('id', '?')}, {cell['cell_type']}) line {n}: "
                             f"{m.group()!r} ({term}) is taught in chapter {ch}: {line.strip()[:160]!r}")
    return found


CHAPTERS = sorted(p for p in NBS.glob('[0-9][0-9]_*.ipynb') if chapter_of(p) >= 1)

@pytest.mark.parametrize('path', CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_nothing_used_before_its_chapter(path):
    found = early_terms(path)
    if found:
        pytest.fail(f'{len(found)} use(s) of a term before the chapter that teaches it (point ahead on the same line, '
                    f'"chapter N will ...", or reword):\n' + '\n'.join(found), pytrace=False)


def test_glossary_finds_the_chapters():
    assert [chapter_of(p) for p in CHAPTERS][:6] == [1, 2, 3, 4, 5, 6], CHAPTERS


def test_the_matching(tmp_path, monkeypatch):
    "Word boundaries, variants, code and pointers: the test catches what it should and nothing else."
    def hits(line, chapter=1):
        return sorted({term for ch, term, rx in TERMS if ch > chapter and rx.search(line)})
    assert hits('Lossless compression, glossy paper') == []
    assert hits('the Loss: quad_loss(params) and loss_func') == ['loss']
    assert hits('MAE, mse and a residual') == ['MAE', 'MSE', 'residual']
    assert hits('Maestro, mseed, Sgdx') == []
    assert hits('loss.backward() then x.backward(g); a backward pass') == ['backward', 'loss']
    assert hits('x.requires_grad_(); with torch.no_grad():') == ['no_grad', 'requires_grad']
    assert hits('the learning-rate and the Learning Rates') == ['learning rate']
    assert hits('Gradients, a derivative; ReLUs; torch.autograd.gradcheck') == ['ReLU', 'autograd', 'derivative', 'gradient']
    assert hits('mini-batches, a minibatch, 3 epochs, SGD, cross-entropy, F.cross_entropy, softmax') == \
        ['cross-entropy', 'epoch', 'minibatch', 'softmax', 'stochastic gradient descent']
    assert hits('the computational graph and the chain rule') == ['chain rule', 'computation graph']
    assert hits('gradient', chapter=4) == [] and hits('epoch', chapter=6) == []
    assert visible_lines({'cell_type': 'markdown', 'source': '> **Card** `relu/gradient-at-zero`\n> **Q:** A gradient?'}) == \
        [(1, '> **Card** '), (2, '> **Q:** A gradient?')]
    assert chapters_pointed_at('chapter 4 will show it; see chapters 5 and 6, and [loss](03_loss.ipynb)') == [4, 5, 6, 3]

    nb = {'cells': [
        {'cell_type': 'markdown', 'id': 'a', 'metadata': {}, 'source': 'Multiply and add.\nThe gradient tells us how.'},
        {'cell_type': 'markdown', 'id': 'b', 'metadata': {}, 'source': 'Chapter 4 will show the gradient.\n'
                                                                         'The loss waits for [chapter 3](03_loss.ipynb).'},
        {'cell_type': 'code', 'id': 'c', 'metadata': {}, 'outputs': [], 'source': '#| hide\nloss.backward()'},
        {'cell_type': 'code', 'id': 'd', 'metadata': {}, 'outputs': [], 'source': 'y = relu(x)\n# chapter 3: the loss'},
        {'cell_type': 'markdown', 'id': 'e', 'metadata': {}, 'source': 'The gradient, as chapter 3 says.'},
    ]}
    p = write_notebook(tmp_path/'nbs'/'01_x.ipynb', nb['cells'])
    monkeypatch.setitem(globals(), 'ROOT', tmp_path)
    found = early_terms(p)
    assert len(found) == 3, found
    assert found[0].startswith("nbs/01_x.ipynb cell 0 (id a, markdown) line 2: 'gradient' (gradient) is taught in chapter 4")
    assert found[1].startswith("nbs/01_x.ipynb cell 3 (id d, code) line 1: 'relu' (ReLU) is taught in chapter 2")
    assert found[2].startswith("nbs/01_x.ipynb cell 4 (id e, markdown) line 1: 'gradient' (gradient) is taught in chapter 4")
