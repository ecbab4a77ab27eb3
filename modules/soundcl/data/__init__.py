"""Data set preparation: one ``prepare`` module per data set, and what they share.

* one module per data set (:mod:`~soundcl.data.us8k`, :mod:`~soundcl.data.esc50`,
  :mod:`~soundcl.data.tau19`, :mod:`~soundcl.data.tau22`, :mod:`~soundcl.data.cochl`,
  :mod:`~soundcl.data.vgg`), the embedded demo data (:mod:`~soundcl.data.synthetic`, its
  sounds in :mod:`~soundcl.data.sounds`) and sequential transfer
  (:mod:`~soundcl.data.transfer`);
* :mod:`~soundcl.data.skeleton`: the flow every ``prepare`` follows;
* :mod:`~soundcl.data.manifest`: reading and writing the per-task manifests;
* :mod:`~soundcl.data.splits`: task splits and the validation split;
* :mod:`~soundcl.data.marker`: whether an earlier preparation can be reused;
* :mod:`~soundcl.data.probe`: finding and probing audio files, and their errors;
* :mod:`~soundcl.data.audio`: from manifest rows to batches (loading, cropping, caching);
* :mod:`~soundcl.data.augment`: augmentations the YAMLs build (``!new:``).

A new data set is one ``prepare`` module here plus ``hparams/<set>/`` YAMLs
(docs/architecture.md). Imports only :mod:`soundcl.base` and this folder.
"""
