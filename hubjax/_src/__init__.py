"""hubjax's implementation. Public modules of :mod:`hubjax` re-export from here; nothing here
is API. The layers and how a query flows through them: ``docs/architecture.rst``.
"""
