"""Domain-incremental task splits: tasks are groups of recording domains, not of classes.

``task_domains: [[a], [b, c], [s1, s2, s3]]`` (YAML) makes task ``k`` the clips whose
manifest ``domain`` column is one of ``task_domains[k]`` (devices, cities, recording
chains ...), of every class the run uses (``task_classes``, its groups merged): the same
classes in every task, the recording conditions change. Domain names match without
regard to case (TAU 2022's file names say ``a``, papers say ``A``). The split is made
where the class-incremental one is, when the manifests are written
(:func:`soundcl.data.manifest.write_task_manifests`), so ``train_task<k>.csv`` is domain
group ``k``'s.
"""


def validate_task_domains(task_domains):
    """``task_domains`` as a list of lists of str; ValueError naming what is wrong.

    Every group is non-empty and no domain is listed twice.
    """
    if isinstance(task_domains, (str, bytes)) or not hasattr(task_domains, "__iter__"):
        raise ValueError(f"task_domains must be a list of lists of domain names, got {task_domains!r}")
    groups = [[str(d) for d in group] if not isinstance(group, (str, bytes)) and hasattr(group, "__iter__")
              else None for group in task_domains]
    if not groups:
        raise ValueError("task_domains is empty: at least one task (a list of domains) is needed")
    owner = {}
    for k, group in enumerate(groups):
        if not group:
            raise ValueError(f"task_domains[{k}] must be a non-empty list of domain names, got {task_domains[k]!r}")
        for domain in group:
            if domain.casefold() in owner:
                raise ValueError(f"domain {domain!r} is listed twice in task_domains (tasks {owner[domain.casefold()]} "
                                 f"and {k}): the tasks must be disjoint")
            owner[domain.casefold()] = k
    return groups


def domain_tasks(task_domains):
    """Dict ``domain (casefolded) -> task index``."""
    return {d.casefold(): k for k, group in enumerate(validate_task_domains(task_domains)) for d in group}


def task_of_row(task_classes, task_domains=None):
    """``row -> task index or None``: by class (class-incremental) or, with ``task_domains``, by the
    row's ``domain`` among the rows of the used classes (domain-incremental)."""
    task_of_class = {int(c): k for k, classes in enumerate(task_classes) for c in classes}
    if task_domains is None:
        return lambda row: task_of_class.get(int(row["class_idx"]))
    by_domain = domain_tasks(task_domains)
    return lambda row: by_domain.get(str(row["domain"]).casefold()) if int(row["class_idx"]) in task_of_class else None


def check_domains_found(rows, task_domains, what="training clips"):
    """ValueError in one line when a domain of ``task_domains`` has none of ``rows``."""
    found = {str(row["domain"]).casefold() for row in rows}
    missing = [d for group in validate_task_domains(task_domains) for d in group if d.casefold() not in found]
    if missing:
        raise ValueError(f"task_domains names {missing}, which no {what} have (their domains: "
                         f"{sorted({str(row['domain']) for row in rows})})")
