"""Foundations every other folder uses; imports nothing from soundcl.

Atomic file writes (:mod:`~soundcl.base.atomic`), the randomness derived from
``(seed, task, epoch)`` (:mod:`~soundcl.base.randomness`), the ``HPARAMS``
contract by which every part declares the YAML keys it reads
(:mod:`~soundcl.base.contract`) and the checkpointer whose checkpoints are
visible only once complete (:mod:`~soundcl.base.checkpoints`). Nothing here
knows about tasks, models or data sets.
"""
