"""The two course profiles: every name, path and size that differs between them lives here.

``clip``      the original assignment: CIFAR-100 in-distribution, CIFAR-10 out-of-distribution,
              open_clip ``convnext_base_w`` pretrained on ``laion2b_s13b_b82k`` (needs internet
              once for weights and data, and in practice a GPU).
``miniclip``  the offline default: Fashion-MNIST split into six known and four unknown classes,
              and a tiny CLIP trained by this project and shipped inside the package.

Select a profile with ``--profile`` on the command line or the ``OOD_PROFILE`` environment
variable; :func:`get_profile` resolves both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROFILE = "miniclip"
ENV_VAR = "OOD_PROFILE"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

# The first known/unknown split of the 10-class open-set protocol (Neal et al.; CAC paper).
FMNIST_KNOWN = (0, 1, 2, 4, 5, 9)
FMNIST_UNKNOWN = (3, 6, 7, 8)


@dataclass(frozen=True)
class Profile:
    """Everything the course needs to know about one experimental setup.

    Attributes
    ----------
    name: profile id (``"clip"`` or ``"miniclip"``).
    model_name, pretrained: arguments of ``open_clip.create_model_and_transforms``; for
        ``miniclip`` ``pretrained`` is ``None`` and the weights come from the package.
    id_dataset, ood_dataset: dataset names understood by :mod:`ood_utils.course.data`.
    id_classes: original class ids kept as in-distribution, ``None`` meaning all.
    ood_classes: original class ids of the OOD split, ``None`` meaning all.
    id_class_names: names of the in-distribution classes in label order (used for prompts);
        ``None`` means "read them from the dataset" (CIFAR-100).
    feature_dim, embed_dim: trunk output size and projection output size.
    counts: expected number of samples per feature split.
    cac_known, cac_unknown: datasets of the CAC open-set notebook (07): known classes come from
        the train and test splits of ``cac_known``, unknown images from the test split of
        ``cac_unknown``.
    cac_known_classes, cac_unknown_classes: original class ids used as known / unknown,
        ``None`` meaning all classes of the dataset.
    cac_unknown_limit: number of (seeded, random) unknown test images, ``None`` meaning all.
    cac_baseline_per_class: known training images per class for notebook 07's two networks
        (the cross-entropy baseline and the CAC network), ``None`` meaning every one.
    cac_baseline_epochs: training epochs of each of the two networks.
    cac_cnn_channels: filters of the three convolutions of notebook 07's CNN.
    cac_dropout: dropout probability of that CNN.
    cac_init_from_baseline: the CAC network starts from the baseline's trained weights (as the
        CAC project notebook does) instead of the baseline's random initialisation.
    cac_far_unknown: a second unknown set that needs no download (``"sklearn-digits"``), or
        ``""`` for none.
    """

    name: str
    title: str
    model_name: str
    pretrained: str | None
    id_dataset: str
    ood_dataset: str
    id_classes: tuple[int, ...] | None
    ood_classes: tuple[int, ...] | None
    id_class_names: tuple[str, ...] | None
    feature_dim: int
    embed_dim: int
    counts: dict = field(default_factory=dict)
    batch_size: int = 256
    cac_known: str = ""
    cac_unknown: str = ""
    cac_known_classes: tuple[int, ...] | None = None
    cac_unknown_classes: tuple[int, ...] | None = None
    cac_unknown_limit: int | None = None
    cac_baseline_per_class: int | None = None
    cac_baseline_epochs: int = 5
    cac_cnn_channels: tuple[int, int, int] = (32, 32, 64)
    cac_dropout: float = 0.5
    cac_init_from_baseline: bool = False
    cac_far_unknown: str = ""

    @property
    def num_id_classes(self) -> int:
        if self.id_classes is not None:
            return len(self.id_classes)
        return len(self.id_class_names) if self.id_class_names else 100

    @property
    def pair(self) -> str:
        """Human-readable ``ID-->OOD`` label used in printed results.

        When both sides come from one dataset (``miniclip``), each side says which classes it
        holds: ``"FashionMNIST, 6 known classes-->FashionMNIST, 4 unknown classes"``;
        otherwise the dataset names suffice (``"CIFAR100-->CIFAR10"``, as the original).
        """
        if self.id_dataset != self.ood_dataset:
            return f"{self.id_dataset}-->{self.ood_dataset}"
        known = f"{self.num_id_classes} known classes"
        unknown = (f"{len(self.ood_classes)} unknown classes" if self.ood_classes is not None
                   else "unknown classes")
        return f"{self.id_dataset}, {known}-->{self.ood_dataset}, {unknown}"


PROFILES: dict[str, Profile] = {
    "clip": Profile(
        name="clip",
        title="CIFAR-100 vs CIFAR-10 with open_clip convnext_base_w (laion2b_s13b_b82k)",
        model_name="convnext_base_w",
        pretrained="laion2b_s13b_b82k",
        id_dataset="CIFAR100",
        ood_dataset="CIFAR10",
        id_classes=None,
        ood_classes=None,
        id_class_names=None,
        feature_dim=1024,
        embed_dim=640,
        counts={"id_train": 50_000, "id_test": 10_000, "ood_test": 10_000},
        batch_size=128,
        cac_known="MNIST",
        cac_unknown="CIFAR10",
        cac_unknown_limit=500,
        cac_baseline_per_class=None,
        cac_baseline_epochs=5,
        cac_cnn_channels=(32, 32, 64),
        cac_init_from_baseline=True,
    ),
    "miniclip": Profile(
        name="miniclip",
        title="Fashion-MNIST 6 known vs 4 unknown classes with the shipped tiny CLIP",
        model_name="miniclip-fmnist",
        pretrained=None,
        id_dataset="FashionMNIST",
        ood_dataset="FashionMNIST",
        id_classes=FMNIST_KNOWN,
        ood_classes=FMNIST_UNKNOWN,
        id_class_names=tuple(FASHION_MNIST_CLASSES[i] for i in FMNIST_KNOWN),
        feature_dim=320,
        embed_dim=128,
        counts={"id_train": 36_000, "id_test": 6_000, "ood_test": 4_000},
        batch_size=512,
        cac_known="FashionMNIST",
        cac_unknown="FashionMNIST",
        cac_known_classes=FMNIST_KNOWN,
        cac_unknown_classes=FMNIST_UNKNOWN,
        cac_baseline_per_class=2000,
        cac_baseline_epochs=3,
        cac_cnn_channels=(16, 16, 32),
        cac_init_from_baseline=False,
        cac_far_unknown="sklearn-digits",
    ),
}


def get_profile(name: str | Profile | None = None) -> Profile:
    """Resolve a profile: explicit name, else ``$OOD_PROFILE``, else ``miniclip``."""
    if isinstance(name, Profile):
        return name
    chosen = name or os.environ.get(ENV_VAR) or DEFAULT_PROFILE
    try:
        return PROFILES[chosen]
    except KeyError:
        raise ValueError(
            f"unknown profile {chosen!r}; choose one of {sorted(PROFILES)} "
            f"(set {ENV_VAR} or pass --profile)") from None


def project_root() -> Path:
    """The course checkout: ``$OOD_ROOT`` if set, else the folder that holds ``ood_utils``."""
    env = os.environ.get("OOD_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return Path(os.environ.get("OOD_DATA_DIR", project_root() / "data"))


def features_dir(profile: str | Profile | None = None) -> Path:
    base = Path(os.environ.get("OOD_FEATURES_DIR", project_root() / "features"))
    return base / get_profile(profile).name


def weights_cache_dir() -> Path:
    """Downloaded CLIP weights: ``$OOD_WEIGHTS_DIR`` if set, else ``<data>/weights``."""
    return Path(os.environ.get("OOD_WEIGHTS_DIR", data_dir() / "weights"))


def notebooks_dir() -> Path:
    """The instructor notebooks: ``$OOD_NOTEBOOKS_DIR`` if set, else ``<root>/notebooks``."""
    return Path(os.environ.get("OOD_NOTEBOOKS_DIR", project_root() / "notebooks"))


def results_dir() -> Path:
    return Path(os.environ.get("OOD_RESULTS_DIR", project_root() / "results"))
