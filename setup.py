"""Installable soundcl package: continual learning of sound classes on SpeechBrain."""
from setuptools import find_packages, setup

setup(
    name="soundcl",
    version="0.1.0",
    description="SpeechBrain recipes for continual (class-incremental) learning of sound classes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    package_dir={"": "modules"},
    packages=find_packages("modules"),
    python_requires=">=3.9",
    install_requires=[
        # ContinualBrain overrides Brain._wrap_distributed and SafeCheckpointer
        # Checkpointer._list_checkpoint_dirs (no public hooks): pinned, checked by
        # tests/test_speechbrain_assumptions.py.
        "speechbrain>=1.1,<1.2",
        # torchaudio is compiled against exactly one torch release: pin the pair to the
        # same minor version so pip can never combine, e.g., torch 2.15 with torchaudio 2.11.
        "torch>=2.11,<2.12",
        "torchaudio>=2.11,<2.12",
        "hyperpyyaml",
        "torchlibrosa",
        "torchmetrics",
        "tqdm",
        "soundfile",
        "matplotlib",
        "numpy",
    ],
    extras_require={
        # passt is part of the test install (the PaSST tests and hparams cells need it; ~15 MB of wheels).
        "test": ["pytest", "pytest-timeout", "onnx", "onnxruntime", "onnxscript", "tensorboard",
                 "hear21passt", "timm", "torchvision>=0.26,<0.27"],
        "export": ["onnx", "onnxruntime", "onnxscript"],
        # use_tensorboard=True (soundcl.results.tensorboard_log, SpeechBrain's TensorboardLogger)
        "tensorboard": ["tensorboard"],
        # soundcl.models.passt (PaSST). timm pulls torchvision, which is built against exactly one
        # torch release: torchvision 0.26 <-> torch 2.11 (else `import timm` fails on torchvision::nms).
        "passt": ["hear21passt", "timm", "torchvision>=0.26,<0.27"],
    },
)
