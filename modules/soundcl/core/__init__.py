"""The task loop and the machinery every method shares.

:mod:`~soundcl.core.task_loop` runs the tasks (train, checkpoint, test, update
the memory) and :mod:`~soundcl.core.run_metrics` what it measures beside the
accuracy matrix (task-IL, forward transfer, resources); :mod:`~soundcl.core.continual` and :mod:`~soundcl.core.brains`
are the Brains methods subclass; :mod:`~soundcl.core.task_data` the task-data
policies (which clips a task trains on); :mod:`~soundcl.core.recipe` the steps
every recipe script takes and :mod:`~soundcl.core.config` the checks of YAML
values; losses, LR schedulers and the DDP helpers that several methods use.
Nothing here names a particular method. Imports :mod:`soundcl.base`,
:mod:`soundcl.models`, :mod:`soundcl.data`, :mod:`soundcl.results`,
:mod:`soundcl.memory` and this folder.
"""
