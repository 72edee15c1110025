"""Published normalization constants, with where they come from, to check data against.

``prep check imagenet ./my_photos`` says how far the ImageNet constants are from a user's data;
``prep show FILE --against cifar10`` compares a stats file with a constant set. Values are in
unit scale (what ``ToDtype(scale=True)`` gives), as pasted into ``transforms.Normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownConstants:
    """A published ``(mean, std)`` pair: its ``mode``, where it comes from, and what it is."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str
    origin: str
    # the std is a mean of per-image stds (True), the pooled std (False), or of unknown provenance (None)
    per_image_std: bool | None = False

    @property
    def channels(self) -> int:
        return len(self.mean)

    def normalize_line(self) -> str:
        def fmt(values):
            inner = ", ".join(f"{v:g}" for v in values)
            return f"({inner},)" if len(values) == 1 else f"({inner})"

        return f"transforms.Normalize(mean={fmt(self.mean)}, std={fmt(self.std)})"


KNOWN: dict[str, KnownConstants] = {
    k.name: k
    for k in (
        KnownConstants(
            "mnist",
            (0.1307,),
            (0.3081,),
            "L",
            "pooled pixel mean/std of the 60,000 MNIST training images (PyTorch's MNIST example)",
        ),
        KnownConstants(
            "fashion-mnist", (0.2860,), (0.3530,), "L", "pooled over the 60,000 Fashion-MNIST training images"
        ),
        KnownConstants(
            "cifar10",
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            "RGB",
            "pooled pixel mean/std of the 50,000 CIFAR-10 training images",
        ),
        KnownConstants(
            "cifar10-copied",
            (0.4914, 0.4822, 0.4465),
            (0.2023, 0.1994, 0.2010),
            "RGB",
            "the widely copied CIFAR-10 std: a mean of per-image stds (a batch_size=1 loop averaging "
            "img.std()), about 18% below the pooled std that Normalize assumes",
            per_image_std=True,
        ),
        KnownConstants(
            "cifar100",
            (0.5071, 0.4867, 0.4408),
            (0.2675, 0.2565, 0.2761),
            "RGB",
            "pooled pixel mean/std of the 50,000 CIFAR-100 training images",
        ),
        KnownConstants(
            "imagenet",
            (0.485, 0.456, 0.406),
            (0.229, 0.224, 0.225),
            "RGB",
            "torchvision's ImageNet constants: a random training subset after Resize(256) + CenterCrop(224), "
            "std averaged per image; the subset is lost, so they cannot be reproduced",
            per_image_std=True,
        ),
        KnownConstants(
            "inception",
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
            "RGB",
            "not statistics: maps [0, 1] to [-1, 1] (Inception, many GAN and ViT recipes)",
        ),
    )
}


@dataclass(frozen=True)
class KnownLighting:
    """A published PCA lighting constant set (AlexNet-style colour noise): eigenvalues and the
    eigenvectors as the *columns* of ``eigvec``, as pasted, and where they come from."""

    name: str
    eigval: tuple[float, ...]
    eigvec: tuple[tuple[float, ...], ...]
    origin: str


IMAGENET_LIGHTING = KnownLighting(
    "imagenet",
    (0.2175, 0.0188, 0.0045),
    ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203)),
    "fb.resnet.torch's ImageNet lighting constants (pasted into many PyTorch training scripts); on another "
    "scale than a covariance in unit scale squared (their squares sum to 0.048 while ImageNet's pixel "
    "variance is about 0.15): compare their ratios, not their values",
)
