"""Encoders, heads and front ends (``torch.nn`` modules), built from the YAML by ``!new:``.

One file per model family (:mod:`~soundcl.models.encoders` and the kinds it
names, :mod:`~soundcl.models.bcresnet`, :mod:`~soundcl.models.ascl_bcresnet`,
:mod:`~soundcl.models.dsmn`, :mod:`~soundcl.models.passt`), the classifier and
projection heads (:mod:`~soundcl.models.heads`) and the filterbank front end
(:mod:`~soundcl.models.frontend`). Imports only :mod:`soundcl.base` and this folder.
"""
