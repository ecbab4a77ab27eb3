"""Test support: not part of the library's interface.

:mod:`soundcl.testing.miniatures` writes tiny stand-ins of the real data sets in their
real on-disk layout, for the tests, the benches and the ``synth`` demo YAMLs. It
imports only :mod:`soundcl.base` and :mod:`soundcl.data` (it calls their ``prepare``).
"""
