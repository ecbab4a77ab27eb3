"""The continual-learning methods: one file per method (or a family's variants), by family.

* :mod:`soundcl.methods.supervised`: supervised strategies of ``recipes/sup_train.py``
  (the table ``STRATEGIES``) and the replay Brain;
* :mod:`soundcl.methods.evaluation`: linear and kNN evaluation of trained encoders, embedding maps;
* :mod:`soundcl.methods.scene`: acoustic scenes, on-device students, sequential transfer;
* :mod:`soundcl.methods.ssl`: the continual-SSL family of ``recipes/ssl_train.py`` (the table ``SSL_METHODS``).

A method is a Brain (a :class:`soundcl.core.continual.ContinualBrain` subclass)
that declares its ``HPARAMS`` at the top and implements its step
(``compute_objectives``, and ``compute_forward`` if it changes it); see
docs/architecture.md, "Add a method". Families are layered in the order
above (``ssl`` may use ``supervised`` and ``evaluation``, not the reverse);
methods import everything below them, never a recipe.
"""
