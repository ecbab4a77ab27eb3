"""What a recipe's collaborators need from its YAML, declared where they are defined.

Every Brain, task-data policy, memory policy and the task loop declares, at its
top, the hparams it reads (as Mammoth's continual models declare their
arguments)::

    class SupervisedBrain(...):
        HPARAMS = {"use_mixup": REQUIRED, "mixup_alpha": REQUIRED, ...}

A value of :data:`REQUIRED` means "no sensible default: the YAML must set it";
any other value is the default used when the YAML leaves the key out (only for
keys that never change what a run measures, e.g. ``stop_after_task``).
:func:`check_declared` runs before anything is built: a missing or misspelled
key fails in one line naming it, instead of a ``.get`` silently picking another
protocol.
"""
import difflib
import types

#: Marker of a declared hparam without a default.
REQUIRED = object()


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line."""


def declared_hparams(*owners):
    """Merge the ``HPARAMS`` declarations of ``owners`` and their base classes.

    Arguments
    ---------
    owners : classes, instances or modules with an ``HPARAMS`` dict (key -> default or REQUIRED)

    Returns
    -------
    dict key -> (default or REQUIRED, name of the declaring class)
    """
    merged = {}
    for owner in owners:
        if isinstance(owner, types.ModuleType):  # a module's own HPARAMS (e.g. soundcl.core.recipe)
            merged.update({key: (default, owner.__name__) for key, default in owner.HPARAMS.items()})
            continue
        cls = owner if isinstance(owner, type) else type(owner)
        # Base classes first, so that a subclass can give a key a default.
        for klass in reversed(cls.__mro__):
            for key, default in vars(klass).get("HPARAMS", {}).items():
                merged[key] = (default, klass.__name__)
    return merged


def check_declared(hparams, owners, hparams_file):
    """Raise :class:`ConfigError` for the first required key ``hparams`` lacks.

    Arguments
    ---------
    hparams : mapping (previewed or loaded hparams)
    owners : list of classes (or instances) declaring ``HPARAMS``
    hparams_file : str, named in the message
    """
    for key, (default, owner) in declared_hparams(*owners).items():
        if default is REQUIRED and key not in hparams:
            close = difflib.get_close_matches(key, [str(k) for k in hparams], n=2)
            hint = f" (found {', '.join(close)}: misspelled?)" if close else ""
            raise ConfigError(f"{hparams_file} lacks the key '{key}' that {owner} needs{hint}")


def with_defaults(hparams, owners):
    """Add the declared defaults of keys that ``hparams`` (a dict) leaves out; returns ``hparams``."""
    for key, (default, _) in declared_hparams(*owners).items():
        if default is not REQUIRED and key not in hparams:
            hparams[key] = default
    return hparams
