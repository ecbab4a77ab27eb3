"""docs/architecture.md's "Add a method" steps, followed as written, and the SSL family's one recipe.

The example method is the doc's own code block (executed as a module), its table row the
doc's row, its YAML the doc's keys on a copy of the YAML the doc names; it then runs two
tiny tasks through ``recipes/ssl_train.py`` and the shared task loop. The published SSL
scripts are checked to be that recipe with their row of ``SSL_METHODS``.
"""
import json
import os
import re
import runpy
import types

import pytest

from conftest import REPO_ROOT, recipe_argv, run_recipe
from soundcl.methods.ssl import family

DOC = os.path.join(REPO_ROOT, "docs", "architecture.md")

# Two tasks of two classes, one epoch, short crops.
TINY = [
    "--task_classes=[[0,1],[2,3]]",
    "--number_of_epochs=1",
    "--warmup_epochs=0",
    "--lr_per_256=0.5",
    "--train_duration=0.5",
    "--knn_k=5",
]

#: Published script -> its ssl_method.
ALIASES = {
    "simclr_train": "simclr", "simsiam_train": "simsiam", "supclr_train": "supclr", "sup_labeldist": "sup_labeldist",
    "moco_train": "moco", "supmoco_train": "supmoco", "barlowtwins_train": "barlowtwins", "supsiam_train": "supsiam",
    "cassle_simclr": "cassle_simclr", "cassle_moco": "cassle_moco", "cassle_barlowtwins": "cassle_barlowtwins",
    "cassiam_train": "cassiam",
}


def _section(title):
    with open(DOC, encoding="utf-8") as fin:
        text = fin.read()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(section, language):
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _example_method():
    """(name, Brain class, YAML keys) as docs/architecture.md gives them."""
    section = _section("Add a method")
    module = types.ModuleType("example_method")
    exec(compile(_blocks(section, "python")[0], "docs/architecture.md", "exec"), module.__dict__)
    name, brain_name = re.search(r'`"(\w+)": SSLMethod\((\w+)\)`', section).groups()
    keys = dict(line.split(":", 1) for line in _blocks(section, "yaml")[0].strip().splitlines())
    base_yaml = re.search(r"copied from\s+`(\w+\.yaml)`", section).group(1)
    return name, getattr(module, brain_name), {k.strip(): v.strip() for k, v in keys.items()}, base_yaml


def _write_yaml(tmp_path, base_yaml, keys):
    with open(os.path.join(REPO_ROOT, "hparams", "synth", base_yaml), encoding="utf-8") as fin:
        lines = fin.read().splitlines()
    out, todo = [], dict(keys)
    for line in lines:
        key = line.split(":", 1)[0]
        if ":" in line and not line.startswith((" ", "#")) and key in todo:
            line = f"{key}: {todo.pop(key)}"
        out.append(line)
    out += [f"{key}: {value}" for key, value in todo.items()]
    path = tmp_path / "example_train.yaml"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def test_the_files_the_steps_name_exist():
    for title in ("Add a method", "Add a data set", "Add a memory policy"):
        for rel in re.findall(r"`((?:modules/soundcl|hparams|recipes|tests)/[\w/.]+\.(?:py|yaml))`", _section(title)):
            assert os.path.isfile(os.path.join(REPO_ROOT, rel)), f"docs/architecture.md, {title}: no {rel}"


def test_the_doc_example_method_runs_two_tasks_through_ssl_train(tmp_path, synth_data_folder, monkeypatch):
    name, brain_class, keys, base_yaml = _example_method()
    assert set(brain_class.HPARAMS) <= set(keys), "the doc's YAML keys give the method's HPARAMS"
    monkeypatch.setitem(family.SSL_METHODS, name, family.SSLMethod(brain_class))  # step 2: the table row
    yaml = _write_yaml(tmp_path, base_yaml, keys)  # step 3
    argv = recipe_argv(yaml, str(tmp_path / "out"), synth_data_folder, *TINY, "--experiment_name=example")
    argv = [a for a in argv if not a.startswith(("--lr=", "--lr_final="))]
    results = run_recipe("ssl_train", argv)  # step 4
    assert len(results["accuracy_matrix"]) == 2 and all(len(row) == 2 for row in results["accuracy_matrix"])
    log = open(tmp_path / "out" / "example" / "1986" / "train_log.txt", encoding="utf-8").read()
    assert "task: 1, epoch: 1" in log and "train ssl:" in log
    config = json.load(open(tmp_path / "out" / "example" / "1986" / "run_config.json", encoding="utf-8"))
    assert json.loads(config["ssl_method"]) == name

    # A key of the method's HPARAMS left out: the start-up check names it.
    without = _write_yaml(tmp_path, base_yaml, {k: v for k, v in keys.items() if k == "ssl_method"})
    with pytest.raises(SystemExit, match=f"lacks the key 'align_weight' that {brain_class.__name__} needs"):
        run_recipe("ssl_train", [without, *argv[1:]])


def test_ssl_train_refuses_an_unknown_method_and_a_script_refuses_another_method(tmp_path):
    yaml = os.path.join(REPO_ROOT, "hparams", "synth", "simclr_train.yaml")
    with pytest.raises(SystemExit, match="ssl_method='nope' is not valid: expected one of simclr, "):
        run_recipe("ssl_train", [yaml, "--ssl_method=nope", f"--output_base={tmp_path}"])
    with pytest.raises(SystemExit, match="this script runs ssl_method='moco'"):
        run_recipe("moco_train", [yaml, f"--output_base={tmp_path}"])


@pytest.mark.parametrize("script", sorted(ALIASES))
def test_each_published_ssl_script_is_ssl_train_with_its_row(script):
    namespace = runpy.run_path(os.path.join(REPO_ROOT, "recipes", f"{script}.py"), run_name="alias_check")
    method = family.SSL_METHODS[ALIASES[script]]
    ssl_train = runpy.run_path(os.path.join(REPO_ROOT, "recipes", "ssl_train.py"), run_name="alias_check")
    assert namespace["NEEDS"] == ssl_train["needs"](method.brain)
    with open(os.path.join(REPO_ROOT, "recipes", f"{script}.py"), encoding="utf-8") as fin:
        text = fin.read()
    assert f'ssl_method="{ALIASES[script]}", brain_class={method.brain.__name__})' in text
    code = [line for line in text.split('"""')[2].splitlines() if line.strip()]
    assert len(code) <= 12, "an alias stays thin"
    for dataset in os.listdir(os.path.join(REPO_ROOT, "hparams")):
        path = os.path.join(REPO_ROOT, "hparams", dataset, f"{script}.yaml")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fin:
                assert f"\nssl_method: {ALIASES[script]} " in fin.read(), path
    assert set(ALIASES.values()) == set(family.SSL_METHODS)


def test_the_doc_memory_policy_steps(monkeypatch):
    """A MemoryPolicy subclass built from memory_size, named in MEMORY_POLICIES, chosen by mem_manage."""
    from soundcl.memory import policies

    class KeepFirst(policies.MemoryPolicy):
        def __init__(self, memory_size):
            self.memory_size = memory_size

        def select(self, memory_ids, task_rows, context):
            return (list(memory_ids) + [row["ID"] for row in task_rows])[: self.memory_size]

    monkeypatch.setitem(policies.MEMORY_POLICIES, "keep_first", KeepFirst)
    hparams = {key: None for key in policies.FixedSizeMemory.HPARAMS}
    policy = policies.FixedSizeMemory.from_hparams({**hparams, "mode": "replay", "mem_manage": "keep_first",
                                                    "memory_size": 2})
    assert isinstance(policy, KeepFirst)
    assert policy.select(["a"], [{"ID": "b"}, {"ID": "c"}], None) == ["a", "b"]
