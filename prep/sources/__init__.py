"""Sources: where images come from. One module per kind, behind one protocol (:mod:`.base`).

=====================  ==============================================================  ===========
``SOURCE``             what it reads                                                   native mode
=====================  ==============================================================  ===========
a directory            image files below it, recursively (:mod:`.folder`)              RGB
``*idx3-ubyte[.gz]``   one MNIST-format image file: MNIST, EMNIST, ... (:mod:`.idx`)   L
``mnist``, ``fashion-mnist``, ``kmnist``  ``ROOT/<Class>/raw/*-idx3-ubyte[.gz]``        L
``cifar10``, ``cifar100``  ``ROOT/cifar-10-batches-py/``, ``ROOT/cifar-100-python/``    RGB
``sample``             the small image folder shipped inside prep                      RGB
``*.zip``, ``*.tar``,  image members, read in place by workers (:mod:`.archive`)       RGB
``*.tar.gz``, ``*.tgz``
shards                 WebDataset samples of several archives: a list of paths, a      RGB
                       brace range ``train-{000000..000127}.tar``, or a directory
                       with ``archives=True`` (:mod:`.archive`, :mod:`.shards`)
``*.npy``, ``*.npz``   a NumPy image array, memory-mapped (:mod:`.npy`)                by shape
``hf:NAME``            a Hugging Face dataset from the local cache (:mod:`.hf`)        by content
a Dataset/iterable     PIL images or image tensors, ``(image, target)`` pairs, or      by content
                       dicts (``image_key``)
=====================  ==============================================================  ===========
"""

from prep.sources.archive import ArchiveSource
from prep.sources.base import BatchSource, FileChunk, FileReader, FolderReader, Source, TaskSource
from prep.sources.dataset import DatasetSource
from prep.sources.named import PRESETS, SPLITS
from prep.sources.npy import NumpySource
from prep.sources.resolve import SAMPLE_DIR, dataset_names, resolve_source
from prep.sources.splits import available_splits

__all__ = [
    "PRESETS",
    "SAMPLE_DIR",
    "SPLITS",
    "ArchiveSource",
    "BatchSource",
    "DatasetSource",
    "FileChunk",
    "FileReader",
    "FolderReader",
    "NumpySource",
    "Source",
    "TaskSource",
    "available_splits",
    "dataset_names",
    "resolve_source",
]
