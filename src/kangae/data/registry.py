"""Every dataset kangae knows: where each one's files come from (or which function makes it)
and what its classes are called."""

from __future__ import annotations

import importlib
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UnknownNameError

if TYPE_CHECKING:
    from .dataset import ImageSet

ROLES = ("train-images", "train-labels", "test-images", "test-labels")
_MNIST_NAMES = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class Archive:
    """A zip that holds the IDX files of several datasets (EMNIST ships this way)."""

    url: str
    md5: str
    member_folder: str
    local_name: str


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of IDX files. ``md5`` holds the official MD5 of each file as distributed
    (gzipped); ``content_md5`` that of its decompressed IDX bytes, so a re-compressed copy of the
    same data is still recognized. ``image_dtype`` and ``label_dtype`` are the element types the
    files must declare."""

    name: str
    title: str
    classes: tuple[str, ...]
    files: dict[str, str]
    md5: dict[str, str] = field(default_factory=dict)
    content_md5: dict[str, str] = field(default_factory=dict)
    image_dtype: str = "uint8"
    label_dtype: str = "uint8"
    mirrors: tuple[str, ...] = ()
    archive: Archive | None = None
    folders: tuple[str, ...] = ()
    transpose: bool = False
    label_offset: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def search_folders(self) -> tuple[str, ...]:
        return (self.name, *self.folders)


@dataclass(frozen=True)
class GeneratedSpec:
    """A dataset kangae makes itself, deterministically, with known answers (where the deciding
    object is). ``builder`` names ``module:function``, imported when first loaded and called as
    ``function(split, data_dir=..., strict=...)`` to give an :class:`ImageSet`; ``made_from``
    lists the datasets it is generated from (none for a purely synthetic one)."""

    name: str
    title: str
    classes: tuple[str, ...]
    builder: str
    shape: tuple[int, int, int]
    made_from: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build(self, split: str, data_dir: Any = None, strict: bool | None = None) -> ImageSet:
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)(split, data_dir=data_dir, strict=strict)


@dataclass(frozen=True)
class CifarSpec:
    """CIFAR-10 or CIFAR-100 in the binary version (Krizhevsky 2009): each record is
    ``label_bytes`` label bytes then 3,072 bytes of a 32 x 32 RGB image, channel by channel.
    ``label_index`` picks the label byte (CIFAR-100: 0 coarse, 1 fine); ``check_labels`` bounds
    every label byte (index -> number of values). The pickled "python version"
    (``pickled_folder``) is refused, never unpickled."""

    name: str
    title: str
    classes: tuple[str, ...]
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int
    label_index: int
    check_labels: tuple[tuple[int, int], ...]
    records: dict[str, int]
    pickled_folder: str
    archive_name: str
    shape: tuple[int, int, int] = (3, 32, 32)
    url: str = "https://www.cs.toronto.edu/~kriz/cifar.html"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def search_folders(self) -> tuple[str, ...]:
        return (f"{self.name}/{self.folder}", self.folder, self.name)

    @property
    def files(self) -> dict[str, str]:
        return {f: f for f in (*self.train_files, *self.test_files)}


Spec = DatasetSpec | GeneratedSpec | CifarSpec


def _emnist(split: str, title: str, classes: tuple[str, ...], label_offset: int = 0) -> DatasetSpec:
    files = {
        role: f"emnist-{split}-{role.split('-')[0]}-"
        f"{'images-idx3' if role.endswith('images') else 'labels-idx1'}-ubyte.gz"
        for role in ROLES
    }
    return DatasetSpec(
        name=f"emnist-{split}",
        title=title,
        classes=classes,
        files=files,
        archive=Archive(
            url="https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
            md5="58c8d27c78d21e728a6bc7b3cc06412e",
            member_folder="gzip/",
            local_name="emnist-gzip.zip",
        ),
        folders=("emnist",),
        transpose=True,
        label_offset=label_offset,
    )


_DIGITS = tuple(string.digits)
_UPPER = tuple(string.ascii_uppercase)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm
""".split())
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond")

DATASETS: dict[str, Spec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="mnist",
            title="MNIST handwritten digits",
            classes=_DIGITS,
            files=_MNIST_NAMES,
            md5={
                "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            },
            content_md5={  # LeCun's uncompressed files; /work/shared/datasets/mnist matches them
                "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
            },
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
        ),
        DatasetSpec(
            name="fashion-mnist",
            title="Fashion-MNIST (Zalando article images)",
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            files=_MNIST_NAMES,
            md5={
                "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            },
            content_md5={
                "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
            },
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            folders=("fashion_mnist", "FashionMNIST"),
        ),
        DatasetSpec(
            name="kmnist",
            title="Kuzushiji-MNIST (cursive hiragana)",
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            files=_MNIST_NAMES,
            md5={
                "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
                "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
                "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
                "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
            },
            mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            folders=("KMNIST",),
        ),
        _emnist("letters", "EMNIST letters (upper and lower case merged)",
                tuple(string.ascii_lowercase), label_offset=1),
        _emnist("balanced", "EMNIST balanced (47 classes)",
                _DIGITS + _UPPER + tuple("abdefghnqrt")),
        _emnist("digits", "EMNIST digits", _DIGITS),
        _emnist("byclass", "EMNIST by class (62 classes)",
                _DIGITS + _UPPER + tuple(string.ascii_lowercase)),
        CifarSpec(
            name="cifar10",
            title="CIFAR-10 (32x32 colour photos, binary version)",
            classes=CIFAR10_CLASSES,
            folder="cifar-10-batches-bin",
            train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            test_files=("test_batch.bin",),
            label_bytes=1,
            label_index=0,
            check_labels=((0, 10),),
            records={"train": 50_000, "test": 10_000},
            pickled_folder="cifar-10-batches-py",
            archive_name="cifar-10-binary.tar.gz",
        ),
        CifarSpec(
            name="cifar100",
            title="CIFAR-100 (32x32 colour photos, 100 fine classes, binary version)",
            classes=CIFAR100_CLASSES,
            folder="cifar-100-binary",
            train_files=("train.bin",),
            test_files=("test.bin",),
            label_bytes=2,
            label_index=1,
            check_labels=((0, 20), (1, 100)),
            records={"train": 50_000, "test": 10_000},
            pickled_folder="cifar-100-python",
            archive_name="cifar-100-binary.tar.gz",
        ),
        GeneratedSpec(
            name="cluttered-mnist",
            title="MNIST digits on 56x56 canvases with clutter (the pointing game)",
            classes=_DIGITS,
            builder="kangae.data.cluttered:load_split",
            shape=(1, 56, 56),
            made_from=("mnist",),
        ),
        GeneratedSpec(
            name="shapes",
            title="Coloured shapes on textured 64x64 backgrounds (one shape decides, its box known)",
            classes=SHAPE_CLASSES,
            builder="kangae.data.shapes:load_split",
            shape=(3, 64, 64),
        ),
    ]
}


def get_spec(name: str) -> Spec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownNameError("dataset", name, DATASETS) from None
