"""Set zh translations from the command line: python babel/set.py 'Users=用户' 'Roles=角色'."""
import sys

from babel.messages.pofile import read_po, write_po

PO = "app/translations/zh/LC_MESSAGES/messages.po"
with open(PO, "rb") as fh:
    catalog = read_po(fh, locale="zh")
for pair in sys.argv[1:]:
    msgid, _, msgstr = pair.partition("=")
    if msgid not in catalog:
        sys.exit(f"unknown msgid: {msgid}")
    catalog[msgid].string = msgstr
    catalog[msgid].flags.discard("fuzzy")
with open(PO, "wb") as fh:
    write_po(fh, catalog, width=100)
