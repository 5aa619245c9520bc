"""ImageNet (ILSVRC2012), which does not fit in memory: JPEG folders read by torchvision's
ImageFolder and decoded by a regular DataLoader with workers. As for the other sets, the
standard validation split is the validation set (`val/acc`); missing files are reported
in one DataError line naming `data.data_dir`."""

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from lbtrain.data import register_datamodule
from lbtrain.data.order import EpochShuffleSampler
from lbtrain.errors import DataError, one_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_datamodule("imagenet")
class ImageNetDataModule(L.LightningDataModule):
    """ImageNet (ILSVRC2012) from JPEG folders: data_dir/train/<wnid>/*.JPEG and
    data_dir/val/<wnid>/*.JPEG, read by ImageFolder and decoded in DataLoader workers.

    Standard transforms: RandomResizedCrop(224) + horizontal flip for training, Resize(256)
    + CenterCrop(224) for validation, both normalised with ImageNet's statistics. Training
    takes one order per (seed, epoch), each DDP rank its share. `num_classes` is the number
    of class folders in train/ (1000 for the full set), so a subset gets a matching head.
    """

    input_shape = (3, 224, 224)

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        eval_batch_size: int = 256,
        shuffle_seed: int = 0,
        download: bool = False,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size  # per device (micro-batch)
        self.eval_batch_size, self.shuffle_seed = eval_batch_size, shuffle_seed
        self.download = download  # only reported: ImageNet has no public download URL
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers
        # read now: the model, built before setup(), needs the head size; ImageFolder's own
        # class count, or 1000 when train/ is missing or empty (setup() then says so in one line)
        try:
            self.num_classes = len(datasets.folder.find_classes(str(self.data_dir / "train"))[0])
        except FileNotFoundError:
            self.num_classes = 1000
        normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        self.train_transform = v2.Compose(
            [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), *to_float, normalize]
        )
        self.val_transform = v2.Compose([v2.Resize(256), v2.CenterCrop(224), *to_float, normalize])
        self.train_set: datasets.ImageFolder | None = None

    def check(self) -> None:
        """Before anything is built, and where Lightning prepares the data: both splits are
        there."""
        for split in ("train", "val"):
            if not (self.data_dir / split).is_dir():
                why = "; data.download=true cannot fetch it" if self.download else ""
                raise DataError(
                    f"data.data_dir={self.data_dir}: ImageNet not found (missing {split}/){why}; "
                    "get ILSVRC2012 from https://image-net.org and unpack it as "
                    "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
                )

    prepare_data = check

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.check()
        try:
            train = datasets.ImageFolder(str(self.data_dir / "train"), self.train_transform)
            val = datasets.ImageFolder(str(self.data_dir / "val"), self.val_transform)
        except FileNotFoundError as e:  # a split without class folders or images
            raise DataError(f"data.data_dir={self.data_dir}: {one_line(e)}") from None
        if val.classes != train.classes:  # labels are folder indices: they must agree
            raise DataError(
                f"data.data_dir={self.data_dir}: val/ has {len(val.classes)} class folders that "
                f"differ from train/'s {len(train.classes)}; both need the same <wnid> folders"
            )
        self.train_set, self.val_set = train, val

    @property
    def num_train_samples(self) -> int:
        """Training images (after setup): the N of the noise scale and temperature."""
        return len(self.train_set)

    def _loader(self, dataset: datasets.ImageFolder, batch_size: int, train: bool) -> DataLoader:
        trainer = self.trainer
        on_cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            # training: one order per (seed, epoch), this rank's share of it (Lightning
            # keeps a DistributedSampler it is given); evaluation: Lightning shards it
            sampler=EpochShuffleSampler(dataset, world, rank, self.shuffle_seed) if train else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and on_cuda,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, train=False)
