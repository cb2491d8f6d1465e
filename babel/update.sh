#!/usr/bin/env bash
# Re-extract every msgid into babel/messages.pot and merge it into the zh catalogue.
#
#   bash babel/update.sh      then translate the new (empty) msgstr entries in
#                             app/translations/zh/LC_MESSAGES/messages.po
#                             (terms: /work/shared/GLOSSARY.md) and run `make translations`.
#
# Our code uses English msgids: _l("...") / lazy_gettext / gettext / _ in app/**.py and
# _("...") in app/templates. babel/fab_messages.py adds the Flask-AppBuilder msgids
# that FAB's own zh catalogue lacks or gets wrong (ours is loaded after FAB's).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

"$BIN/pybabel" -q extract -F babel/babel.cfg -k _l -k lazy_gettext -k gettext -k _ \
  --add-comments=TRANSLATORS: --add-location=file --sort-by-file \
  --project="店群订单管理" --copyright-holder="" \
  -o babel/messages.pot .

# No fuzzy matching: a guessed translation of a new msgid is worse than none.
"$BIN/pybabel" -q update -i babel/messages.pot -d app/translations -l zh \
  --no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date

"$BIN/pybabel" compile -f --statistics -d app/translations

# List what still needs a translation (exit 0: new msgids are expected here).
"$BIN/python" - <<'PY'
from babel.messages.pofile import read_po

with open("app/translations/zh/LC_MESSAGES/messages.po", "rb") as fh:
    catalog = read_po(fh, locale="zh")
todo = [m.id for m in catalog if m.id and not m.string]
for msgid in todo:
    print("未翻译:", msgid)
PY
