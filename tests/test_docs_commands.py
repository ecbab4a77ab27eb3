"""Every command of README.md, docs/*.md and hparams/*/README.md runs.

Commands are the lines of ```bash blocks that start with ``python`` (or ``torchrun``,
whose script part is checked the same way), ``\\`` continuations joined and
``&&`` chains split. ``python recipes/<recipe>.py <yaml> <options>`` is checked by
the recipe's own start-up check (``soundcl.core.recipe.check_config`` with the script's
``NEEDS``), with placeholders (``<...>``, data folders) filled by a tmp folder:
every option name and value must be accepted. The README's demo command runs for
real, tiny. Module commands run; benchmarks, ``recipes/export.py`` and ``soundcl.results.report`` answer
``--help``; ``python -m soundcl.seeds <recipe> <yaml> --seeds=[...] <options>`` is checked as the
recipe command of its first seed.
"""
import glob
import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_recipe

DOC_FILES = sorted(
    [os.path.join(REPO_ROOT, "README.md")]
    + glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
    + glob.glob(os.path.join(REPO_ROOT, "hparams", "*", "README.md"))
)
DEMO = "python recipes/sup_train.py hparams/synth/sup_train.yaml"
TESTS = 'python -m pytest -q tests'
#: Options whose value is a folder that must exist; filled with a tmp folder.
FOLDER_OPTIONS = ("data_folder", "cochl_folder", "tau22_folder", "ssl_checkpoints_dir")
TIMEOUT_S = 120


def bash_commands(path):
    """(line number, command) of each python / torchrun command in the file's ```bash blocks."""
    commands, in_bash, pending, start = [], False, "", 0
    with open(path, encoding="utf-8") as fin:
        for number, line in enumerate(fin, 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                in_bash = not in_bash and stripped == "```bash"
                continue
            if not in_bash:
                continue
            if not pending:
                start = number
            pending += stripped
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            for part in pending.split("&&"):
                part = part.strip()
                if part.startswith(("python ", "torchrun ")):
                    commands.append((start, part))
            pending = ""
    return commands


ALL_COMMANDS = [
    (os.path.relpath(path, REPO_ROOT), number, command)
    for path in DOC_FILES
    for number, command in bash_commands(path)
]


def test_docs_have_commands_and_readme_leads_with_the_two():
    assert len(DOC_FILES) >= 1 + 4 + 7, DOC_FILES
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as fin:
        readme = fin.read()
    assert len(readme.splitlines()) <= 200
    first_two = [c for _, c in bash_commands(os.path.join(REPO_ROOT, "README.md"))][:2]
    assert first_two == [DEMO, TESTS]
    assert readme.rstrip().endswith("## License\n\nMIT")
    for path in DOC_FILES:
        assert bash_commands(path), f"{path} has no command"


def _fill(value, tmp):
    """A placeholder ``<NAME>`` becomes a folder under tmp (created)."""
    return re.sub(r"<([A-Za-z0-9_]+)>", lambda m: os.path.join(str(tmp), m.group(1)), value)


def _recipe_argv(argv, tmp):
    """argv (yaml, options) with placeholders and folders filled; the folders (and ``*_path`` files) exist."""
    yaml, options = argv[0], []
    for option in argv[1:]:
        assert option.startswith("--"), f"not an option: {option}"
        key, sep, value = option[2:].partition("=")
        value = _fill(value, tmp)
        if key in FOLDER_OPTIONS:
            value = os.path.join(str(tmp), "folders", key)
        if value.startswith(str(tmp)) and key.endswith("_path"):
            # A checkpoint path (e.g. passt_pretrained_path) must name an existing file: an empty stand-in.
            os.makedirs(os.path.dirname(value), exist_ok=True)
            open(value, "a").close()
        elif value.startswith(str(tmp)) and key not in ("output_base",):
            os.makedirs(value, exist_ok=True)
        options.append(f"--{key}={value}" if sep else f"--{key}")
    return yaml, options


def _script_and_args(command):
    words = shlex.split(command, comments=True)
    if words[0] == "torchrun":
        at = next(i for i, w in enumerate(words) if w.endswith(".py"))
        words = ["python", *words[at:]]
    assert words[0] == "python", command
    if words[1:3] == ["-m", "soundcl.seeds"]:
        # The seeds runner runs the recipe once per seed: checked as the recipe run of its first seed.
        from soundcl.seeds import split_argv

        recipe_args, seeds, _ = split_argv(words[3:])
        return [*recipe_args, f"--seed={seeds[0]}"]
    return words[1:]


def _is_recipe_run(args):
    return args[0].startswith("recipes/") and args[0] != "recipes/export.py"


def test_no_literal_ellipsis_in_commands():
    """A literal ``...`` would be parsed as a YAML value and fail: placeholders are ``<NAME>``."""
    for source, line, command in ALL_COMMANDS:
        assert "..." not in command, f"{source}:{line}: a literal '...' in `{command}`"


RECIPE_COMMANDS = [c for c in ALL_COMMANDS if _is_recipe_run(_script_and_args(c[2]))]


@pytest.mark.parametrize("source,line,command", RECIPE_COMMANDS, ids=[f"{s}:{n}" for s, n, _ in RECIPE_COMMANDS])
def test_recipe_command_is_accepted(source, line, command, tmp_path):
    args = _script_and_args(command)
    import speechbrain as sb

    from soundcl.core.recipe import check_config

    script = os.path.join(REPO_ROOT, args[0])
    assert os.path.isfile(script), f"{source}:{line}: no {args[0]}"
    assert len(args) >= 2 and os.path.isfile(os.path.join(REPO_ROOT, args[1])), f"{source}:{line}: no YAML {args[1:2]}"
    yaml, options = _recipe_argv([os.path.join(REPO_ROOT, args[1]), *args[2:]], tmp_path)
    with open(yaml, encoding="utf-8") as fin:
        has_ssl_dir = any(l.startswith("ssl_checkpoints_dir:") for l in fin)
    if has_ssl_dir and not any(o.startswith("--ssl_checkpoints_dir=") for o in options):
        # The synth default is the demo's save/ folder, which this test does not create.
        folder = os.path.join(str(tmp_path), "folders", "ssl_checkpoints_dir")
        os.makedirs(folder, exist_ok=True)
        options.append(f"--ssl_checkpoints_dir={folder}")
    needs = runpy.run_path(script, run_name="docs_check")["NEEDS"]
    overrides = sb.parse_arguments([yaml, *options])[2]
    try:
        check_config(yaml, overrides, needs)
    except SystemExit as err:
        pytest.fail(f"{source}:{line}: `{command}` is refused: {err}")


def _other_commands():
    seen, out = set(), []
    for source, line, command in ALL_COMMANDS:
        args = _script_and_args(command)
        if _is_recipe_run(args):
            continue
        if args[:2] == ["-m", "pytest"]:
            continue  # the test suite itself
        if args[0].startswith(("bench/", "recipes/")):
            argv = [args[0], "--help"]  # benchmarks run minutes; export needs a trained run
        elif args[:2] in (["-m", "soundcl.report"], ["-m", "soundcl.predict"], ["-m", "soundcl.extend"]):
            argv = args[:2] + ["--help"]  # reads the results of runs the docs made first
        elif args[0] == "-m" and args[1].startswith("soundcl."):
            argv = args
        else:
            raise AssertionError(f"{source}:{line}: unknown kind of command `{command}`")
        if tuple(argv) not in seen:
            seen.add(tuple(argv))
            out.append((f"{source}:{line}", argv))
    return out


@pytest.mark.parametrize("where,argv", _other_commands(), ids=[w for w, _ in _other_commands()])
def test_other_commands_run(where, argv):
    assert argv[0] == "-m" or os.path.isfile(os.path.join(REPO_ROOT, argv[0])), f"{where}: no {argv[0]}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(REPO_ROOT, "modules"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{where}: {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"


def test_readme_demo_runs_and_writes_the_documented_folder(tmp_path):
    """The demo, tiny; then linear evaluation accepts its save/ folder as the docs say."""
    import speechbrain as sb

    from soundcl.core.recipe import check_config

    output_base = str(tmp_path / "results")
    yaml = os.path.join(REPO_ROOT, "hparams", "synth", "sup_train.yaml")
    run_recipe("sup_train", [yaml, "--number_of_epochs=1", "--task_classes=[[0,1],[2,3]]",
                             f"--output_base={output_base}", "--noprogressbar"])
    save = os.path.join(output_base, "sup_train_replay0", "1986", "save")  # <output_base>/<experiment_name>/<seed>/save
    assert os.path.isfile(os.path.join(save, "task1", "task_state.json"))
    linclf = os.path.join(REPO_ROOT, "hparams", "synth", "linclf_train.yaml")
    needs = runpy.run_path(os.path.join(REPO_ROOT, "recipes", "linclf_train.py"), run_name="docs_check")["NEEDS"]
    # The synth default ssl_checkpoints_dir is <output_base>/sup_train_replay0/<seed>/save.
    check_config(linclf, sb.parse_arguments([linclf, f"--output_base={output_base}"])[2], needs)


#: zhepeiw/cssl_sound README.md, "Experiments": the encoder and linear-evaluation commands of
#: UrbanSound8K and TAU19, as written there with ``recipes/`` in front of the script
#: (``<PATH_TO_ENCODER_CKPT>`` "should be identical to the <ENCODER_OUTPUT_DIR> with a /save suffix").
ORIGINAL_README_COMMANDS = {
    "us8k": [
        "python recipes/supclr_train.py hparams/us8k/supclr_train.yaml --output_base <ENCODER_OUTPUT_DIR> "
        "--replay_num_keep=0 --use_mixup=False --ssl_weight=1 --sup_weight=0 --train_duration=2.0 "
        "--emb_norm_type=bn --proj_norm_type=bn --batch_size=32 --experiment_name=<NAME>",
        "python recipes/linclf_train.py hparams/us8k/linclf_train.yaml --output_base <EVAL_OUTPUT_DIR> "
        "--linclf_train_type=seen --replay_num_keep=all --ssl_checkpoints_dir=<PATH_TO_ENCODER_CKPT> "
        "--emb_norm_type bn --experiment_name=<NAME>",
        # cssl_sound's knn_eval.py flag names (knn_train_type, knn_t) on the same encoder.
        "python recipes/knn_eval.py hparams/us8k/knn_eval.yaml --output_base <EVAL_OUTPUT_DIR> "
        "--knn_train_type=buffer --knn_k=200 --knn_t=0.1 --ssl_checkpoints_dir=<PATH_TO_ENCODER_CKPT> "
        "--experiment_name=<NAME>_knn",
    ],
    "tau19": [
        "python recipes/supclr_train.py hparams/tau19/supclr_train.yaml --output_base <ENCODER_OUTPUT_DIR> "
        "--replay_num_keep=0 --use_mixup=False --ssl_weight=1 --sup_weight=0 --train_duration=4.0 "
        "--emb_norm_type bn --proj_norm_type bn --batch_size=32 --experiment_name=<NAME>",
        "python recipes/linclf_train.py hparams/tau19/linclf_train.yaml --output_base <EVAL_OUTPUT_DIR> "
        "--linclf_train_type=seen --ssl_checkpoints_dir=<PATH_TO_ENCODER_CKPT> --emb_norm_type bn "
        "--experiment_name=<NAME>",
    ],
}

#: What makes the original commands tiny on a miniature (these replace the command's own value).
ORIGINAL_TINY = {"number_of_epochs": "1", "encoder_channels": "[8,16]", "emb_dim": "32", "n_mels": "32",
                 "task_classes": "[[0,1],[2,3]]", "batch_size": "4", "warmup_epochs": "0", "num_workers": "0"}


def _original_argv(command, folders, data_folder):
    """argv of an original README command: placeholders filled, ``--data_folder`` and the tiny values added."""
    words = shlex.split(command.replace("<PATH_TO_ENCODER_CKPT>", "<ENCODER_OUTPUT_DIR>/save"))
    words = [re.sub(r"<([A-Z_]+)>", lambda m: folders.get(m.group(1), "readme"), w) for w in words[1:]]
    argv, skip = [], False
    for word in words[1:]:
        key = word[2:].split("=", 1)[0] if word.startswith("--") else None
        if skip and key is None:
            skip = False
            continue
        skip = False
        if key in ORIGINAL_TINY:
            skip = "=" not in word  # "--key value": drop the value too
            continue
        argv.append(word)
    with open(os.path.join(REPO_ROOT, argv[0]), encoding="utf-8") as fin:
        keys = {line.split(":", 1)[0] for line in fin if line[:1].isalpha()}
    argv += [f"--{k}={v}" for k, v in ORIGINAL_TINY.items() if v is not None and k in keys]
    return words[0], [os.path.join(REPO_ROOT, argv[0]), *argv[1:], f"--data_folder={data_folder}", "--noprogressbar"]


@pytest.mark.parametrize("dataset", sorted(ORIGINAL_README_COMMANDS))
def test_cssl_sound_readme_commands_run_as_written(dataset, tmp_path):
    """The original README's encoder then linear-evaluation command run on a miniature:
    ``--ssl_checkpoints_dir=<ENCODER_OUTPUT_DIR>/save`` finds the one run under it (soundcl writes
    ``<output_base>/<experiment_name>/<seed>/save``); the kNN flags of cssl_sound are accepted."""
    from soundcl.testing import miniatures

    make = {"us8k": lambda f: miniatures.make_us8k(f), "tau19": lambda f: miniatures.make_tau19(f, clips_per_class=5)}
    data_folder = make[dataset](str(tmp_path / "data"))
    folders = {"ENCODER_OUTPUT_DIR": str(tmp_path / "enc"), "EVAL_OUTPUT_DIR": str(tmp_path / "eval")}
    for command in ORIGINAL_README_COMMANDS[dataset]:
        script, argv = _original_argv(command, folders, data_folder)
        assert script.startswith("recipes/"), command
        results = run_recipe(os.path.basename(script)[:-len(".py")], argv)
        assert results is not None, command
    assert len(glob.glob(str(tmp_path / "enc" / "readme" / "*" / "save" / "task1"))) == 1
    for name in ("readme", "readme_knn")[:len(ORIGINAL_README_COMMANDS[dataset]) - 1]:
        found = glob.glob(str(tmp_path / "eval" / name / "*" / "results.json"))
        assert len(found) == 1, (name, os.listdir(tmp_path / "eval"))


def test_original_checkpoint_folder_with_several_runs_fails_listing_them(tmp_path):
    from soundcl.core import config
    from soundcl.base.contract import ConfigError

    for seed in ("1986", "2022"):
        os.makedirs(tmp_path / "enc" / "simclr" / seed / "save" / "task0")
    with pytest.raises(ConfigError, match=r"holds 2 encoder runs: name one of .*1986/save, .*2022/save"):
        config.original_command_overrides(f"ssl_checkpoints_dir: {tmp_path}/enc/save")
    single = config.original_command_overrides(f"ssl_checkpoints_dir: {tmp_path}/enc/simclr/1986/save\nknn_t: 0.1")
    assert single == f"ssl_checkpoints_dir: {tmp_path}/enc/simclr/1986/save\nknn_temperature: 0.1"
    with pytest.raises(ConfigError, match="same option"):
        config.original_command_overrides("knn_t: 0.1\nknn_temperature: 0.2")
    # A recipe's own overrides as a dict (replay_train's cross-validation folds): the same rules.
    os.makedirs(tmp_path / "one" / "simclr" / "1986" / "save" / "task0")
    assert config.original_command_overrides({"knn_t": 0.1, "ssl_checkpoints_dir": f"{tmp_path}/one/save"}) == {
        "knn_temperature": 0.1, "ssl_checkpoints_dir": f"{tmp_path}/one/simclr/1986/save"}
    with pytest.raises(ConfigError, match="same option"):
        config.original_command_overrides({"knn_t": 0.1, "knn_temperature": 0.2})
