"""The one exception type that reaches users.

Anything a user can fix (a bad path, an empty prompt, a model that does not fit) is raised as
`UserError` with a one-line message naming the problem and what to do. The CLI prints it and
exits 2; the UI shows it in the pane. Anything else is a bug and keeps its traceback in logs.
"""


class UserError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""
