"""soundcl: continual learning of sound classes on SpeechBrain.

The folders are the architecture (docs/architecture.md), lowest first; a module
imports only from its own folder or from folders listed before it (checked by
tests/test_architecture.py):

* :mod:`soundcl.base`: files written atomically, seeds, the ``HPARAMS`` contract, checkpoints;
* :mod:`soundcl.models`: encoders, heads, front ends;
* :mod:`soundcl.data`: data sets (one ``prepare`` each), audio loading, augmentation;
* :mod:`soundcl.results`: metrics, results files, report, plots, TensorBoard;
* :mod:`soundcl.memory`: memory (replay buffer) policies and the scores they select by;
* :mod:`soundcl.core`: the task loop and the machinery every method shares (Brains, task data, recipe steps);
* :mod:`soundcl.ondevice`: complexity, quantization, export, distillation;
* :mod:`soundcl.methods`: the continual-learning methods, one file each;
* :mod:`soundcl.testing`: miniature data sets for tests and benches.

The modules at this level are the published command-line entry points only:
``python -m soundcl.seeds``, ``python -m soundcl.report``, ``python -m soundcl.complexity``.
"""
__version__ = "0.1.0"
