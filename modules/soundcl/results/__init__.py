"""What a run leaves behind: metrics, results files, the report over seeds, plots and logs.

The accuracy matrix and the continual-learning summaries computed from it
(:mod:`~soundcl.results.metrics`), per-epoch curves
(:mod:`~soundcl.results.curves`), the plots of a run
(:mod:`~soundcl.results.report_plots`), the report over several runs
(:mod:`~soundcl.results.report`, ``python -m soundcl.report``) and TensorBoard
scalars (:mod:`~soundcl.results.tensorboard_log`). A new metric goes into
``metrics.py``. Imports only :mod:`soundcl.base` and this folder.
"""
