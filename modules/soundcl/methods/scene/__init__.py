"""Acoustic scenes and transfer: the DCASE on-device student and sequential transfer (SIT).

:mod:`~soundcl.methods.scene.brains` holds ``SceneBrain`` (``recipes/dsmn_train.py``,
``recipes/export.py``) and ``SITBrain`` (``recipes/sit_train.py``). Imports the
folders below :mod:`soundcl.methods` (distillation from :mod:`soundcl.ondevice`).
"""
