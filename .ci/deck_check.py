#!/usr/bin/env python3
"""Is the deck `neuralwiki anki` built right? Run in a folder holding deck.apkg, deck2.apkg (a second build) and deck.csv.

Checks: at least 50 notes; the CSV has one row per note, with the deck's GUIDs; a second build is identical (the same
notes, the same GUIDs, the same times: a rebuilt deck never looks newer than the learner's copy). Exit 1 if not.
"""
import csv, sys

from neuralwiki.anki import read_deck


def csv_rows(path):
    "The CSV's card rows (Anki's `#` header lines left out)."
    with open(path, encoding='utf-8') as f: return list(csv.reader((r for r in f if not r.startswith('#')), delimiter=','))


def main():
    one, two = read_deck('deck.apkg'), read_deck('deck2.apkg')
    notes = sum(len(v) for v in one.values())
    rows = csv_rows('deck.csv')
    same_cards = {r[0] for r in rows} == {guid for notes_ in one.values() for guid, _ in notes_}
    print(f"deck: {notes} notes in {len(one)} sub-decks; CSV: {len(rows)} cards, the deck's GUIDs: {same_cards}; "
          f"second build identical: {one == two}")
    if notes < 50 or one != two or len(rows) != notes or not same_cards: sys.exit("the deck is wrong")


if __name__ == '__main__': main()
