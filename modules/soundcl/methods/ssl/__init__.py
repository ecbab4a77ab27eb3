"""The continual self-supervised family: one recipe (``recipes/ssl_train.py``), one Brain per method.

:mod:`~soundcl.methods.ssl.base` is ``SSLBrain`` (two views, projector, kNN
test) with SimCLR, SimSiam and SupCLR; :mod:`~soundcl.methods.ssl.sup_term`
the supervised term; :mod:`~soundcl.methods.ssl.moco`,
:mod:`~soundcl.methods.ssl.barlow`, :mod:`~soundcl.methods.ssl.cassle`,
:mod:`~soundcl.methods.ssl.labeldist`, :mod:`~soundcl.methods.ssl.agem` one
method (and its variants) each. :mod:`~soundcl.methods.ssl.family` is the
table ``SSL_METHODS`` (YAML ``ssl_method`` -> Brain): adding a method is a
Brain file, one table row and the YAML keys. Imports every folder below
:mod:`soundcl.methods` and the ``supervised`` and ``evaluation`` families.
"""
