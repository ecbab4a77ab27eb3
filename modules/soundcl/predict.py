"""Classify audio files with a finished soundcl run.

    python -m soundcl.predict RUN_DIR FILE_OR_FOLDER... [--task=K] [--top_k=3] [--csv=out.csv]
        [--on_bad_audio=error|skip] [--classes=seen|all] [--device=cpu]

``RUN_DIR`` is a run's output folder (``<output_base>/<experiment_name>/<seed>``, e.g.
``results/synth/sup_train_replay0/1986`` after the README's demo); ``--task`` picks the
task whose final checkpoint classifies (default: the last finished one). Folders are
searched recursively for the audio formats libsndfile reads, with a progress bar. Each file
is scored alone (:meth:`soundcl.inference.ContinualClassifier.classify_file`), over the
classes learned up to that task (``--classes=all``: every output of the head); one line per file: the file, then the ``top_k`` classes
with their probabilities. ``--csv`` also writes ``file,label_1,prob_1,...,label_k,prob_k``.

A file that is not audio stops the run naming it (``--on_bad_audio=error``, the default) or
is named and skipped (``skip``); a run folder that cannot classify (no finished task, not a
run) stops in one line.
"""
import argparse
import csv
import logging
import os
import sys

# soundcl internals: the only imports of this module (paths may change with the package layout).
from soundcl.data.folder import AUDIO_EXTENSIONS
from soundcl.data.probe import list_files
from soundcl.inference import AudioReadError, ContinualClassifier, RunNotReady


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m soundcl.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run's output folder (holding inference.yaml and save/)")
    parser.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("--task", type=int, default=None, help="task whose CKPT+final is used (default: the last finished)")
    parser.add_argument("--top_k", type=int, default=3, help="classes printed per file")
    parser.add_argument("--csv", default=None, help="also write the predictions to this CSV file")
    parser.add_argument("--on_bad_audio", choices=("error", "skip"), default="error",
                        help="a file that cannot be decoded: stop (error) or name it and go on (skip)")
    parser.add_argument("--classes", choices=("seen", "all"), default="seen",
                        help="score the classes learned so far (seen) or every output of the head (all)")
    parser.add_argument("--device", default="cpu", help="e.g. cuda:0")
    return parser.parse_args(argv)


def expand_inputs(inputs):
    """Files named, and the audio files under the folders named, in order; (files, any folder given)."""
    files, folders = [], False
    for item in inputs:
        if os.path.isdir(item):
            folders = True
            files.extend(os.path.join(item, rel) for rel in list_files(item, AUDIO_EXTENSIONS))
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise SystemExit(f"error: {item}: no such file or folder")
    return files, folders


def format_line(path, top_k):
    return "\t".join([path, *(f"{name} ({prob:.3f})" for name, prob in top_k)])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # not SpeechBrain's INFO lines on loading
    files, folders = expand_inputs(args.inputs)
    if not files:
        raise SystemExit(f"error: no audio file in {', '.join(args.inputs)}")
    try:
        classifier = ContinualClassifier.from_hparams(source=args.run_dir, task=args.task, top_k=args.top_k,
                                                      classes=args.classes, run_opts={"device": args.device})
    except RunNotReady as err:
        raise SystemExit(f"error: {err}") from None
    print(f"# {args.run_dir}: after task {classifier.task}, {len(classifier.classes)} classes: "
          f"{', '.join(classifier.classes)}", file=sys.stderr)

    from tqdm import tqdm

    results, skipped = [], []
    for path in tqdm(files, desc="classifying", disable=not folders, file=sys.stderr):
        try:
            out = classifier.classify_file(path)
        except AudioReadError as err:
            if args.on_bad_audio == "error":
                raise SystemExit(f"error: {err} (--on_bad_audio=skip: name it and go on)") from None
            skipped.append(path)
            tqdm.write(f"skipping {path}: {err}", file=sys.stderr)
            continue
        results.append((path, out.top_k[0]))
        line = format_line(path, out.top_k[0])
        if folders:
            tqdm.write(line, file=sys.stdout)
        else:
            print(line)
    if args.csv:
        write_csv(args.csv, results, min(args.top_k, len(classifier.classes)))
    if skipped:
        print(f"# skipped {len(skipped)} files that are not audio", file=sys.stderr)
    return results


def write_csv(path, results, top_k):
    """``file,label_1,prob_1,...`` one row per classified file."""
    header = ["file"] + [f"{what}_{r}" for r in range(1, top_k + 1) for what in ("label", "prob")]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(header)
        for file, ranked in results:
            writer.writerow([file, *(v for name, prob in ranked for v in (name, f"{prob:.6f}"))])


if __name__ == "__main__":
    main()
