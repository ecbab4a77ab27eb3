"""Evaluation of trained encoders: linear probe, kNN, embedding maps.

:mod:`~soundcl.methods.evaluation.linear_eval` (``recipes/linclf_train.py``),
:mod:`~soundcl.methods.evaluation.knn_eval` (``recipes/knn_eval.py``),
:mod:`~soundcl.methods.evaluation.frozen_cil` (``recipes/frozen_cil.py``: NCM and RanPAC, the
closed-form heads of :mod:`~soundcl.methods.evaluation.frozen_heads`, on one frozen encoder),
:mod:`~soundcl.methods.evaluation.visualize` (``recipes/visualize.py``), the
cosine kNN classifier they and the SSL family test with
(:mod:`~soundcl.methods.evaluation.knn`), the embedding cache and the loading
of another run's task-wise encoder checkpoints. Imports the folders below
:mod:`soundcl.methods` and :mod:`soundcl.methods.supervised`.
"""
