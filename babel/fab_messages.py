"""Flask-AppBuilder msgids that our zh catalogue must translate itself.

Never imported: this file only exists so that ``pybabel extract`` (babel.cfg,
babel/update.sh) puts these msgids into babel/messages.pot, and ``pybabel update``
therefore keeps them in app/translations/zh/LC_MESSAGES/messages.po.

Flask-AppBuilder 5.3 ships a zh catalogue that is missing these msgids, has them
only as fuzzy entries (not compiled), or translates them wrongly. Our catalogue
is loaded after FAB's (BABEL_TRANSLATION_DIRECTORIES, same "messages" domain),
so every msgid translated in ours wins. To re-check after a FAB upgrade, extract
FAB's msgids and compare them with
.venv/lib/python3.11/site-packages/flask_appbuilder/translations/zh/LC_MESSAGES/messages.po.
"""


def _(s):
    return s


# --- missing from FAB's zh catalogue (or present only as fuzzy) ----------------
_("Database Error")
_("Not a valid choice")
_("Must have at least two capital letters, one special character, two digits, "
  "three lower case letters and a minimal length of 10.")
_("Contains (insensitive)")
_("Start with")
_("In")
_("Not In")
_("Either select a role or a group")
_("List Groups")
_("Groups")
_("Show Group")
_("Add Group")
_("Edit Group")
_("User(s) exists in the group, cannot delete")
_("User(s) exists in the role, cannot delete")
_("Edit User Information")
_("User information changed")
_("The user's password for authentication")
_("It's not a good policy to remove a user, just make it inactive")
_("Add")
_("Edit")
_("Show")
_("Delete")
_("Are you sure you want to delete this item?")
_("Sign In with ")

# --- wrong, ungrammatical or English in FAB's zh catalogue -------------------
_("Integrity error, probably unique constraint")  # FAB: 可能缺少必填字段数据 (wrong)
_("Starts with")  # FAB: 以开始 (ungrammatical)
_("Not Starts with")
_("Ends with")
_("Not Ends with")
_("User Registrations")  # FAB: 用户信息 (wrong)
_("Registration not found")  # FAB: 尚未注册
_("List View Menus")  # FAB: 列表视图菜单 (word order)
_("Username valid for authentication on DB or LDAP, unused for OID auth")  # FAB keeps LDAP / OID
_("The user's email, this will also be used for OID auth")  # FAB keeps OID
_("Is Active?")  # FAB: 是否激活？; ours calls "active" 启用
_("Detail")  # FAB: 详细
_("Back")  # FAB: 后退 (browser wording)
