"""The paper's image data sets and the on-device augmentation.

Data modules are tested on small files written in the real on-disk formats (MNIST's IDX,
CIFAR's python pickles, an ImageFolder tree of PNGs) and read through torchvision's own
dataset classes. Augmentation is tested for the statistics of torchvision's
RandomCrop(32, padding=4) + RandomHorizontalFlip(): offsets uniform on {0..8}, fair flips,
and every output a window of the zero-padded image.
"""

import pickle

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from lbtrain.data.augment import BatchTransform, normalize, random_crop_flip
from lbtrain.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule
from lbtrain.data.vision import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule
from lbtrain.errors import ConfigError

# --- augmentation -------------------------------------------------------------------------


def reference_crops(image: torch.Tensor, padding: int = 4) -> dict[tuple[int, int, bool], bytes]:
    """Every crop/flip RandomCrop + RandomHorizontalFlip can give, by explicit slicing."""
    _, h, w = image.shape
    padded = F.pad(image, (padding, padding, padding, padding))
    out = {}
    for i in range(2 * padding + 1):
        for j in range(2 * padding + 1):
            window = padded[:, i : i + h, j : j + w]
            out[(i, j, False)] = window.contiguous().numpy().tobytes()
            out[(i, j, True)] = window.flip(-1).contiguous().numpy().tobytes()
    return out


def test_crop_offsets_are_uniform_on_0_to_8_and_flips_are_fair():
    # each pixel holds its own position, so an output tells where it was cut from
    n, size = 20000, 32
    image = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    g = torch.Generator().manual_seed(0)
    outs = [random_crop_flip(image.expand(5000, 1, size, size), 4, g) for _ in range(n // 5000)]
    out = torch.cat(outs)
    a, b = out[:, 0, 16, 16].long(), out[:, 0, 16, 17].long()
    flipped = b < a  # columns run backwards in a flipped crop
    # output (16, 16) is padded (oy + 16, ox + 16), or (oy + 16, ox + 15) when flipped
    row_offset = a // size + 4 - 16
    col_offset = a % size + 4 - torch.where(flipped, 15, 16)
    assert set(row_offset.tolist()) == set(col_offset.tolist()) == set(range(9))

    def chi2(counts: torch.Tensor) -> float:
        expected = counts.sum() / counts.numel()
        return float(((counts - expected) ** 2 / expected).sum())

    # 0.1% critical values: 26.12 for 8 degrees of freedom, 124.84 for 80
    assert chi2(torch.bincount(row_offset, minlength=9).float()) < 26.12
    assert chi2(torch.bincount(col_offset, minlength=9).float()) < 26.12
    assert chi2(torch.bincount(row_offset * 9 + col_offset, minlength=81).float()) < 124.84
    assert abs(flipped.float().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_crop_is_a_window_of_the_zero_padded_image(dtype):
    x = torch.randint(1, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    x = x.to(dtype)
    out = random_crop_flip(x, 4, torch.Generator().manual_seed(2))
    assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
    drawn = []
    for image, crop in zip(x, out, strict=True):
        matches = [k for k, v in reference_crops(image).items() if v == crop.numpy().tobytes()]
        assert len(matches) == 1  # pixels are >= 1, so padding zeros pin the window
        drawn.append(matches[0])
    assert len(set(drawn)) > 32 and {flip for _, _, flip in drawn} == {False, True}


def test_normalize_equals_totensor_then_normalize():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    expected = torch.stack([reference(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in x])
    got = normalize(x, mean, std)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert x.dtype == torch.uint8  # the input is left alone


def test_augmentation_is_seeded_by_epoch_and_rank():
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)

    def batch(epoch: int, rank: int) -> torch.Tensor:
        t = BatchTransform((0.5,) * 3, (0.25,) * 3, augment=True, seed=3)
        return t(x, epoch, rank)

    assert torch.equal(batch(0, 0), batch(0, 0))  # a resumed run redraws the same crops
    assert not torch.equal(batch(0, 0), batch(0, 1))  # DDP ranks draw their own
    assert not torch.equal(batch(0, 0), batch(1, 0))  # every epoch draws anew

    t = BatchTransform((0.5,) * 3, (0.25,) * 3, augment=True, seed=3)  # one across epochs,
    first, second = t(x, 0, 0, 0), t(x, 0, 0, 1)  # as a loader keeps it
    assert torch.equal(first, batch(0, 0)) and not torch.equal(first, second)
    assert torch.equal(t(x, 0, 0, 1), second)  # batch 1 redrawn alone (a mid-epoch resume)
    assert torch.equal(t(x, 1, 0, 0), batch(1, 0))  # every epoch draws anew


# --- on-disk formats -----------------------------------------------------------------------


def epoch_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def as_uint8(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo normalize(): the pixels the model was shown, as bytes."""
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    pixels = (x * s + m) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    return pixels.round().to(torch.uint8)


# --- MNIST, CIFAR ---------------------------------------------------------------------------


def test_mnist_is_read_whole_as_uint8_and_normalised_without_augmentation(mnist_dir):
    dm = MNISTDataModule(str(mnist_dir), batch_size=8, eval_batch_size=4)
    assert (dm.num_classes, dm.input_shape) == (10, (1, 28, 28))
    dm.prepare_data()
    dm.setup("fit")
    raw = mnist_dir / "MNIST" / "raw"
    images = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], np.uint8)
    assert dm.x.dtype == torch.uint8 and dm.x.shape == (30, 1, 28, 28)
    assert torch.equal(dm.x.flatten(), torch.from_numpy(images.copy()))
    assert dm.x_test.shape == (10, 1, 28, 28) and dm.y.dtype == torch.long
    assert set(dm.y.tolist()) == set(range(10))

    x_val, y_val = epoch_batches(dm.val_dataloader())
    torch.testing.assert_close(x_val, (dm.x_test.float() / 255 - 0.1307) / 0.3081)
    assert torch.equal(y_val, dm.y_test)
    x_train, y_train = epoch_batches(dm.train_dataloader())
    assert x_train.shape == (30, 1, 28, 28) and sorted(y_train.tolist()) == sorted(dm.y.tolist())
    # unaugmented: every training batch image is one of the stored images, normalised
    seen = {im.numpy().tobytes() for im in as_uint8(x_train, (0.1307,), (0.3081,))}
    assert seen == {im.numpy().tobytes() for im in dm.x}


def test_cifar10_train_batches_are_crops_and_flips_of_the_right_images(cifar10_dir, skip_cifar_md5):
    dm = CIFAR10DataModule(str(cifar10_dir), batch_size=16, eval_batch_size=8)
    dm.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert (dm.num_classes, dm.input_shape) == (10, (3, 32, 32))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.x.dtype == torch.uint8 and dm.x.shape == (50, 3, 32, 32)
    rows = pickle.loads((cifar10_dir / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert torch.equal(dm.x[3], torch.from_numpy(rows["data"][3].reshape(3, 32, 32)))  # RGB planes
    assert set(dm.y.tolist()) == set(range(10)) and dm.x_test.shape == (20, 3, 32, 32)

    mean, std = CIFAR10DataModule.mean, CIFAR10DataModule.std
    x_val, y_val = epoch_batches(dm.val_dataloader())
    assert x_val.dtype == torch.float32 and torch.equal(y_val, dm.y_test)
    assert torch.equal(x_val, normalize(dm.x_test, mean, std))  # in order, not augmented

    windows = {}  # every crop/flip of every training image -> (image, offsets, flip)
    for k, image in enumerate(dm.x):
        windows.update({v: (k, *key) for key, v in reference_crops(image).items()})
    x_train, y_train = epoch_batches(dm.train_dataloader())
    assert x_train.shape == (50, 3, 32, 32) and x_train.dtype == torch.float32
    found = [windows[im.numpy().tobytes()] for im in as_uint8(x_train, mean, std)]
    assert sorted(k for k, *_ in found) == list(range(50))  # each image once per epoch
    assert all(dm.y[k] == y for (k, *_), y in zip(found, y_train, strict=True))
    assert len({(i, j) for _, i, j, _ in found}) > 10  # offsets vary ...
    assert {flip for *_, flip in found} == {False, True}  # ... and so do flips

    dm_plain = CIFAR10DataModule(str(cifar10_dir), batch_size=16, augment=False)
    dm_plain.setup("fit")
    x_plain, _ = epoch_batches(dm_plain.train_dataloader())
    seen = {im.numpy().tobytes() for im in as_uint8(x_plain, mean, std)}
    assert seen == {im.numpy().tobytes() for im in dm.x}


def test_cifar100_uses_fine_labels_and_its_own_statistics(cifar100_dir, skip_cifar_md5):
    dm = CIFAR100DataModule(str(cifar100_dir), batch_size=32, eval_batch_size=7)
    assert (dm.num_classes, dm.input_shape) == (100, (3, 32, 32))
    dm.prepare_data()
    dm.setup()
    assert dm.x.shape == (100, 3, 32, 32) and dm.x.dtype == torch.uint8
    assert dm.y.tolist() == list(range(100)) and dm.x_test.shape == (20, 3, 32, 32)
    x_val, _ = epoch_batches(dm.val_dataloader())
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x_val, (dm.x_test.float() / 255 - m) / s)
    x_train, y_train = epoch_batches(dm.train_dataloader())
    assert len(dm.train_dataloader()) == 4 and sorted(y_train.tolist()) == list(range(100))


@pytest.mark.parametrize(
    "cls, expected",
    [
        (MNISTDataModule, "MNIST not found (missing MNIST/raw/)"),
        (CIFAR10DataModule, "CIFAR-10 not found (missing cifar-10-batches-py/)"),
        (CIFAR100DataModule, "CIFAR-100 not found (missing cifar-100-python/)"),
    ],
)
def test_missing_data_is_one_line_naming_the_path_and_the_fix(tmp_path, cls, expected):
    dm = cls(str(tmp_path / "nowhere"), batch_size=8)
    line = (
        f"data.data_dir={tmp_path / 'nowhere'}: {expected}; "
        "set data.download=true to fetch it, or copy it there"
    )
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(ConfigError) as e:
            step()
        assert str(e.value) == line


def test_missing_file_in_a_present_folder_is_named(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="missing cifar-10-batches-py/data_batch_3\\)"):
        CIFAR10DataModule(str(cifar10_dir), batch_size=8).setup()


def test_corrupt_cifar_is_one_line_error(cifar10_dir):
    # the files are all there, but they are not the real archive's: md5 mismatch
    with pytest.raises(ConfigError) as e:
        CIFAR10DataModule(str(cifar10_dir), batch_size=8).setup()
    assert "cifar-10-batches-py/ fails torchvision's checks" in str(e.value)
    assert "\n" not in str(e.value) and "data.download=true" in str(e.value)


# --- ImageNet --------------------------------------------------------------------------------


def test_imagenet_folders_give_224_crops_random_for_train_fixed_for_val(imagenet_dir):
    dm = ImageNetDataModule(str(imagenet_dir), batch_size=6, eval_batch_size=2, num_workers=0)
    assert dm.num_classes == 2 and dm.input_shape == (3, 224, 224)  # read at construction
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 3, 224, 224) and x.dtype == torch.float32
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    x_again, _ = next(iter(dm.train_dataloader()))
    assert not torch.allclose(x.sum((1, 2, 3)).sort().values, x_again.sum((1, 2, 3)).sort().values)

    x_val, y_val = next(iter(dm.val_dataloader()))
    assert x_val.shape == (2, 3, 224, 224) and y_val.tolist() == [0, 1]
    for image, colour in zip(x_val, [(255, 0, 51), (0, 102, 204)], strict=True):
        expected = (torch.tensor(colour) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
            IMAGENET_STD
        )
        torch.testing.assert_close(image, expected.view(3, 1, 1).expand(3, 224, 224))
    assert torch.equal(x_val, next(iter(dm.val_dataloader()))[0])


def test_imagenet_missing_or_mismatched_folders_are_one_line_errors(imagenet_dir, tmp_path):
    missing = ImageNetDataModule(str(tmp_path / "nowhere"), batch_size=4, num_workers=0)
    assert missing.num_classes == 1000  # the full set's head until the folders exist
    with pytest.raises(ConfigError) as e:
        missing.setup()
    assert str(e.value).startswith(f"data.data_dir={tmp_path / 'nowhere'}: ImageNet not found")
    assert "missing train/" in str(e.value) and "\n" not in str(e.value)

    (imagenet_dir / "val" / "n09999999").mkdir()
    Image.new("RGB", (8, 8)).save(imagenet_dir / "val" / "n09999999" / "x.png")
    with pytest.raises(ConfigError, match="val/ has 3 class folders that differ from train/'s 2"):
        ImageNetDataModule(str(imagenet_dir), batch_size=4, num_workers=0).setup()
