"""What a run leaves behind: metrics, results files, the report over seeds, plots and logs.

The accuracy matrix and the continual-learning summaries computed from it
(:mod:`~soundcl.results.metrics`: also task-IL predictions, forward transfer,
intransigence, plasticity), what a task costs (:mod:`~soundcl.results.resources`:
peak RSS / GPU memory, memory bytes), per-epoch curves
(:mod:`~soundcl.results.curves`), the plots of a run
(:mod:`~soundcl.results.report_plots`), the report over several runs
(:mod:`~soundcl.results.report`, ``python -m soundcl.report``; its transfer and
resources table :mod:`~soundcl.results.report_transfer`) and TensorBoard
scalars (:mod:`~soundcl.results.tensorboard_log`). A new metric goes into
``metrics.py``. Imports only :mod:`soundcl.base` and this folder.
"""
