"""Memory policies: which clips are kept for replay after each task, and what they measure.

:mod:`~soundcl.memory.policies` holds the policies (a :class:`~soundcl.memory.policies.MemoryPolicy`
subclass each, with its ``HPARAMS``; the fixed-size ones are named in
``MEMORY_POLICIES`` for ``mem_manage``), :mod:`~soundcl.memory.scores` the
per-clip scores some of them select by (uncertainty, predictions), and
:mod:`~soundcl.memory.perturbations` the input perturbations those scores use.
A policy sees clip ids and the scores the task loop hands it, never a Brain's
internals. Imports only :mod:`soundcl.base` and this folder.
"""
