"""The deck as a learner lives it, in the official Anki library (PyPI `anki`, 26.9: Anki's own importer, with the
import dialog's default options, no GUI).

A maintainer releases the book's cards (`update_shipped_cards`, then `build_deck` from the shipped file, as
`neuralwiki anki` does); a learner imports the deck, reviews cards, tags a note and edits a field; the maintainer
changes ONE card and releases again; the learner re-imports. Only that note may change, the learner's tag, edit and
review history must stay, and renumbering (or, with the documented migration, renaming) sub-decks must leave no
card behind in an old sub-deck while a new one stays empty.

Skipped when the `anki` package is not installed (`pip install anki`: it is in the dev extra, so CI runs it).
"""
import re, time
from pathlib import Path

import pytest

pytest.importorskip('anki.collection', reason="needs the official Anki library: pip install anki (it is in neuralwiki's dev extra)")
pytest.importorskip('genanki', reason='building a deck needs genanki: pip install genanki')
from anki.collection import Collection, ImportAnkiPackageRequest

from _notebooks import write_notebook
from neuralwiki.cards import cloze_deletions
from neuralwiki.anki import TOP_DECK, build_deck, card_guid, load_cards, update_shipped_cards

GOOD = 3  # Anki's answer button "Good"


def write_nb(path, *cells):
    "A notebook of markdown cells."
    write_notebook(Path(path), [{'cell_type': 'markdown', 'id': f'c{i}', 'metadata': {}, 'source': c} for i, c in enumerate(cells)])


def visible(html): return re.sub(r'<[^>]*>', '', html)  # the text a learner sees, without tags and their attributes
def basic(cid, q, a): return f"> **Card** `{cid}`\n>\n> **Q:** {q}\n>\n> **A:** {a}"
def cloze(cid, text): return f"> **Cloze** `{cid}`\n>\n> {text}"

ALPHA = ['# Alpha: the first chapter',
         basic('alpha/one', 'What is $2 + 2$?', '$4$, written `2 + 2 == 4`.'),
         cloze('alpha/two', 'ReLU sets **negative** values to **zero**.'),
         basic('alpha/three', 'Is ReLU linear?', 'No: **piecewise** linear.')]
BETA = ['# Beta: the second chapter',
        basic('beta/one', 'What does `x.grad` hold after `backward()`?', 'The gradient of the loss with respect to `x`.'),
        cloze('beta/two', 'The gradient points **uphill**.')]


class Book:
    "The book's notebooks and its shipped cards file; `release()` is a maintainer's update, then the learner's build."
    def __init__(self, root):
        self.root, self.nbs, self.cards = root, root/'nbs', root/'cards.json'
        self.nbs.mkdir()
        self.n = 0

    def chapter(self, name, cells): write_nb(self.nbs/name, *cells)

    def release(self, later=0):
        "Record the cards (times of unchanged cards kept), build the deck from the record: the path of a release."
        update_shipped_cards(self.nbs, self.cards, now=time.time() + later)
        self.n += 1
        apkg = self.root/f'neuralwiki-{self.n}.apkg'
        build_deck(load_cards(self.cards), apkg)
        return apkg

    def mods(self): return {c.id: c.mod for c in load_cards(self.cards)}


class Learner:
    "A learner's Anki collection."
    def __init__(self, root):
        self.col = Collection(str(root/'collection.anki2'))

    def import_deck(self, apkg):
        "Import as the import dialog does by default; the GUIDs of the notes added and updated."
        opts = self.col._backend.get_import_anki_package_presets()
        log = self.col.import_anki_package(ImportAnkiPackageRequest(package_path=str(apkg), options=opts)).log
        guid = lambda e: self.col.get_note(e.id.nid).guid
        return {'new': {guid(e) for e in log.new}, 'updated': {guid(e) for e in log.updated}}

    def note(self, cid): return self.col.get_note(self.col.db.scalar('SELECT id FROM notes WHERE guid = ?', card_guid(cid)))
    def deck_of(self, cid): return {self.col.decks.name(c.did) for c in self.note(cid).cards()}

    def review(self, cid, ord=0):
        card = next(c for c in self.note(cid).cards() if c.ord == ord)
        card.start_timer()
        self.col.sched.answerCard(card, GOOD)

    def scheduling(self):
        "Every card's scheduling state, and the review log."
        cards = self.col.db.all('SELECT id, type, queue, due, ivl, reps FROM cards ORDER BY id')
        return cards, self.col.db.all('SELECT id, cid, ease, ivl FROM revlog ORDER BY id')

    def sub_decks(self):
        "`{name: number of cards}` of the book's sub-decks."
        return {d.name: len(self.col.find_cards(f'did:{d.id}')) for d in self.col.decks.all_names_and_ids()
                if d.name.startswith(TOP_DECK + '::')}

    def rename_deck(self, old, new): self.col.decks.rename(self.col.decks.id_for_name(old), new)


@pytest.fixture
def world(tmp_path):
    book, learner = Book(tmp_path), Learner(tmp_path)
    book.chapter('01_alpha.ipynb', ALPHA)
    book.chapter('02_beta.ipynb', BETA)
    yield book, learner
    learner.col.close()


def live_a_little(learner):
    "Review two cards, tag one note, edit a field of another."
    learner.review('alpha/one'); learner.review('alpha/two', ord=1)
    n = learner.note('beta/one'); n.add_tag('hard'); learner.col.update_note(n)
    n = learner.note('alpha/three'); n['Back'] += ' (my own note)'; learner.col.update_note(n)


ALL = {card_guid(i) for i in ('alpha/one', 'alpha/two', 'alpha/three', 'beta/one', 'beta/two')}


def test_first_import_renders_every_card(world):
    book, learner = world
    got = learner.import_deck(book.release())
    assert got == {'new': ALL, 'updated': set()}
    assert learner.sub_decks() == {'neuralwiki::Alpha': 4, 'neuralwiki::Beta': 2}  # the cloze made two cards
    asked = {c.ord: c.render_output(reload=True) for c in learner.note('alpha/two').cards()}
    assert visible(asked[0].question_text) == 'ReLU sets [...] values to zero.'
    assert visible(asked[1].question_text) == 'ReLU sets negative values to [...].'
    assert visible(asked[0].answer_text).startswith('ReLU sets negative values to zero.')
    assert '01 Alpha · alpha/two' in asked[0].answer_text
    one = learner.note('alpha/one').cards()[0].render_output(reload=True)
    assert r'\(2 + 2\)' in one.question_text and '<code>2 + 2 == 4</code>' in one.answer_text


def test_reimport_changes_exactly_the_changed_note(world):
    book, learner = world
    first = book.release()
    learner.import_deck(first)
    live_a_little(learner)
    schedule = learner.scheduling()
    assert len(schedule[1]) == 2  # two reviews logged

    # the same cards again: the same file, byte for byte, and nothing to update
    again = book.release()
    assert again.read_bytes() == first.read_bytes()
    assert learner.import_deck(again) == {'new': set(), 'updated': set()}

    # one card changes in its chapter: only its time moves, forward
    before = book.mods()
    book.chapter('01_alpha.ipynb', [ALPHA[0], ALPHA[1], cloze('alpha/two', 'ReLU sets **negative** values to **0**.'), ALPHA[3]])
    changed = book.release()
    after = book.mods()
    assert {i for i in after if after[i] != before[i]} == {'alpha/two'} and after['alpha/two'] > before['alpha/two']
    assert learner.import_deck(changed) == {'new': set(), 'updated': {card_guid('alpha/two')}}

    assert learner.note('alpha/two')['Text'] == 'ReLU sets {{c1::negative}} values to {{c2::0}}.'
    assert learner.note('beta/one').tags == ['beta', 'hard']  # the learner's tag on another note
    assert learner.note('alpha/three')['Back'].endswith(' (my own note)')  # the learner's edit of another note
    assert learner.scheduling() == schedule  # every card's state and the review history, unchanged
    assert learner.sub_decks() == {'neuralwiki::Alpha': 4, 'neuralwiki::Beta': 2}


def test_renumbering_chapters_moves_no_card(world):
    book, learner = world
    learner.import_deck(book.release())
    live_a_little(learner)
    schedule = learner.scheduling()
    (book.nbs/'01_alpha.ipynb').rename(book.nbs/'03_alpha.ipynb')  # Alpha becomes chapter 3, a minute later
    got = learner.import_deck(book.release(later=60))
    # the sub-decks are named without numbers: nothing new, nothing left behind
    assert learner.sub_decks() == {'neuralwiki::Alpha': 4, 'neuralwiki::Beta': 2}
    # each Alpha note says where to reread it ("03 Alpha"): those notes changed, so Anki updates them (replacing a
    # learner's edit of them, as it does for any note that changed after the edit); Beta's are untouched
    assert got == {'new': set(), 'updated': {card_guid(i) for i in ('alpha/one', 'alpha/two', 'alpha/three')}}
    assert learner.note('alpha/one')['Source'] == '03 Alpha · alpha/one'
    assert learner.note('beta/one').tags == ['beta', 'hard']
    assert learner.scheduling() == schedule


def numbered_collection(book, learner):
    "A learner of the previous edition: the same notes, in sub-decks named with chapter numbers."
    learner.import_deck(book.release())
    live_a_little(learner)
    learner.rename_deck('neuralwiki::Alpha', 'neuralwiki::01 Alpha')
    learner.rename_deck('neuralwiki::Beta', 'neuralwiki::02 Beta')
    book.chapter('01_alpha.ipynb', ALPHA + [basic('alpha/four', 'New?', 'Yes.')])  # the new edition adds a card
    return learner.scheduling()


def test_migration_rename_before_import(world):
    "The flashcards appendix's migration: rename each numbered sub-deck, then import."
    book, learner = world
    schedule = numbered_collection(book, learner)
    learner.rename_deck('neuralwiki::01 Alpha', 'neuralwiki::Alpha')
    learner.rename_deck('neuralwiki::02 Beta', 'neuralwiki::Beta')
    got = learner.import_deck(book.release())
    assert got == {'new': {card_guid('alpha/four')}, 'updated': set()}
    assert learner.sub_decks() == {'neuralwiki::Alpha': 5, 'neuralwiki::Beta': 2}
    assert learner.deck_of('alpha/four') == learner.deck_of('alpha/one') == {'neuralwiki::Alpha'}
    assert learner.note('beta/one').tags == ['beta', 'hard']
    assert learner.scheduling()[1] == schedule[1]


def test_migration_after_importing_without_renaming(world):
    "Imported first? Change Deck for the old sub-deck's cards, delete the empty old deck."
    book, learner = world
    schedule = numbered_collection(book, learner)
    learner.import_deck(book.release())
    # what the learner sees: the old cards stay in the numbered deck, the new one arrives in a new sub-deck
    assert learner.sub_decks() == {'neuralwiki::01 Alpha': 4, 'neuralwiki::02 Beta': 2, 'neuralwiki::Alpha': 1,
                                   'neuralwiki::Beta': 0}
    # renaming onto an existing name does not merge (as the appendix warns)
    learner.rename_deck('neuralwiki::02 Beta', 'neuralwiki::Beta')
    assert 'neuralwiki::Beta+' in learner.sub_decks()
    learner.rename_deck('neuralwiki::Beta+', 'neuralwiki::02 Beta')
    # the documented remedy: Browse, deck:"...", select all, Change Deck; delete the empty numbered deck
    for old, new in (('neuralwiki::01 Alpha', 'neuralwiki::Alpha'), ('neuralwiki::02 Beta', 'neuralwiki::Beta')):
        learner.col.set_deck(learner.col.find_cards(f'"deck:{old}"'), learner.col.decks.id_for_name(new))
        learner.col.decks.remove([learner.col.decks.id_for_name(old)])
    assert learner.sub_decks() == {'neuralwiki::Alpha': 5, 'neuralwiki::Beta': 2}
    assert learner.note('beta/one').tags == ['beta', 'hard']
    assert learner.scheduling()[1] == schedule[1]


def test_the_books_deck(tmp_path):
    "The deck of the cards shipped with the package: every note imported, every card rendered, clozes hiding one part each."
    cards, apkg, learner = load_cards(), tmp_path/'neuralwiki.apkg', Learner(tmp_path)
    try:
        build_deck(cards, apkg)
        assert learner.import_deck(apkg) == {'new': {card_guid(c.id) for c in cards}, 'updated': set()}
        expected = {}
        for c in cards:
            expected[f'{TOP_DECK}::{c.deck}'] = expected.get(f'{TOP_DECK}::{c.deck}', 0) + (len(cloze_deletions(c.front)) if c.kind == 'cloze' else 1)
        assert learner.sub_decks() == expected
        for c in cards:
            shown = [visible(k.render_output(reload=True).question_text) for k in learner.note(c.id).cards()]
            assert all(q.strip() for q in shown), c.id
            if c.kind == 'cloze': assert all(q.count('[...]') == 1 for q in shown), (c.id, shown)
        assert learner.import_deck(apkg) == {'new': set(), 'updated': set()}
    finally: learner.col.close()


def test_csv_import(world):
    "The same cards as text: Anki's own Basic and Cloze note types, one card per bold part; re-importing changes nothing."
    from anki.collection import ImportCsvRequest
    from neuralwiki.cards import collect_cards
    from neuralwiki.anki import write_csv
    book, learner = world
    path = book.root/'cards.csv'
    write_csv(collect_cards(book.nbs), path)
    def import_csv():
        metadata = learner.col.get_csv_metadata(str(path), None)
        return learner.col.import_csv(ImportCsvRequest(path=str(path), metadata=metadata)).log
    log = import_csv()
    assert (len(log.new), len(log.updated)) == (5, 0)
    two = learner.note('alpha/two')
    assert two.note_type()['name'] == 'Cloze' and two['Text'] == 'ReLU sets {{c1::negative}} values to {{c2::zero}}.'
    assert [visible(c.render_output(reload=True).question_text) for c in two.cards()] == \
        ['ReLU sets [...] values to zero.', 'ReLU sets negative values to [...].']
    assert learner.sub_decks() == {'neuralwiki::Alpha': 4, 'neuralwiki::Beta': 2}
    log = import_csv()
    assert (len(log.new), len(log.updated)) == (0, 0)
