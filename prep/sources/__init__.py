"""Sources: where images come from. One module per kind, behind one protocol (:mod:`.base`).

=====================  ==============================================================  ===========
``SOURCE``             what it reads                                                   native mode
=====================  ==============================================================  ===========
a directory            image files below it, recursively (:mod:`.folder`)              RGB
``*idx3-ubyte[.gz]``   one MNIST-format image file: MNIST, EMNIST, ... (:mod:`.idx`)   L
``mnist``, ``fashion-mnist``, ``kmnist``  ``ROOT/<Class>/raw/*-idx3-ubyte[.gz]``        L
``cifar10``, ``cifar100``  ``ROOT/cifar-10-batches-py/``, ``ROOT/cifar-100-python/``    RGB
``sample``             the small image folder shipped inside prep                      RGB
a Dataset/iterable     PIL images or image tensors, or ``(image, target)`` pairs       by content
=====================  ==============================================================  ===========
"""

from .base import BatchSource, FileChunk, FileReader, FolderReader, Source, TaskSource
from .named import PRESETS, SPLITS
from .resolve import SAMPLE_DIR, dataset_names, resolve_source

__all__ = [
    "PRESETS",
    "SAMPLE_DIR",
    "SPLITS",
    "BatchSource",
    "FileChunk",
    "FileReader",
    "FolderReader",
    "Source",
    "TaskSource",
    "dataset_names",
    "resolve_source",
]
