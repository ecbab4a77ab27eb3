"""Installable soundcl package: continual learning of sound classes on SpeechBrain."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# The torch family soundcl is tested with, pinned EXACTLY (==): torchaudio and torchvision are
# compiled against one torch build. soundcl.install_check.PINNED holds the same versions (what
# it checks a venv against); tests/test_install_check.py checks that the two agree.
TORCH_FAMILY = {
    "torch": "torch==2.11.0",
    "torchaudio": "torchaudio==2.11.0",
    "torchvision": "torchvision==0.26.0",
}

setup(
    name="soundcl",
    version="0.1.0",
    description="SpeechBrain recipes for continual (class-incremental) learning of sound classes",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
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
        # The binary-coupled torch family is pinned EXACTLY (TORCH_FAMILY): torchaudio's
        # libtorchaudio.so and torchvision's ops are compiled against one torch build, and a
        # patch upload (torchaudio 2.11.1 beside torch 2.11.0) fails at `import speechbrain`.
        # Another torch/CUDA: docs/install.md. Newest allowed uploads: bench/upstream_check.py.
        TORCH_FAMILY["torch"],
        TORCH_FAMILY["torchaudio"],
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
                 "hear21passt", "timm", TORCH_FAMILY["torchvision"]],
        "export": ["onnx", "onnxruntime", "onnxscript"],
        # use_tensorboard=True (soundcl.results.tensorboard_log, SpeechBrain's TensorboardLogger)
        "tensorboard": ["tensorboard"],
        # soundcl.models.passt (PaSST). timm pulls torchvision, which is built against exactly one
        # torch release: torchvision 0.26 <-> torch 2.11 (else `import timm` fails on torchvision::nms).
        "passt": ["hear21passt", "timm", TORCH_FAMILY["torchvision"]],
    },
)
