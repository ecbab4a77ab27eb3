"""Supervised continual-learning strategies (``recipes/sup_train.py --strategy=NAME``) and replay.

One file per strategy (:mod:`~soundcl.methods.supervised.lwf`, ``ewc``,
``er_ace``, ``derpp``, ``gdumb``, ``icarl``, ``joint``), each declaring its
``HPARAMS``; :mod:`~soundcl.methods.supervised.replay` is the on-device replay
Brain of ``recipes/replay_train.py`` (early stopping, cross-validation);
:mod:`~soundcl.methods.supervised.strategies` is the table ``STRATEGIES``
(name -> Brain, task-data policy, memory policy), the only place that names
them. Imports the folders below :mod:`soundcl.methods` and this folder.
"""
