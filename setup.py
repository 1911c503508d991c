"""Installs the tf_bihalf library (and the trainers/export/configs packages beside it)."""

from setuptools import find_packages, setup

CORE = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
    # tfds needs it on Python 3.11 but does not declare it.
    "importlib_resources",
    "numpy",
    "absl-py",
    "ai-edge-litert",
    "tensorflow-serving-api==2.21.0",
    "matplotlib",
    "pillow",
    # Compiles the retrieval metrics' counting kernel (a numpy path gives the same numbers).
    "numba",
    # PyAV: video decoding for the video task (tensorflow-io's video ops are unusable, README).
    "av",
]

setup(
    name="tf-bihalf",
    version="0.1.0",
    description=(
        "Deep unsupervised hashing with the Bi-half layer (Li & van Gemert, AAAI 2021) "
        "in TensorFlow/Keras 3."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "tf_bihalf",
            "tf_bihalf.*",
            "trainers",
            "trainers.*",
            "export",
            "export.*",
            "configs",
            "configs.*",
        ]
    ),
    install_requires=CORE,
    extras_require={
        "dev": ["pytest", "ruff", "scikit-learn"],
        "faiss": ["faiss-cpu"],
        # Milvus backend (tf_bihalf.search.milvus). milvus-lite 3.x cannot store binary
        # vectors; checked with TF 2.21 on Python 3.11: milvus-lite 2.5.1 + pymilvus 2.6.17.
        "milvus": ["milvus-lite>=2.4,<3", "pymilvus>=2.6.17,<3"],
        # PyAV replaces tensorflow-io's video ops; 19.x has no Python 3.11 wheel.
        "video": ["av==18.1.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
    },
    license="MIT",
)
