"""The loader most PyTorch users would write instead of ours, for `pipeline_bench.py`.

webdataset reading the same shards, Pillow decode, and torchvision's classic transforms
with the paper's crop in place of RandomResizedCrop:

    Compose([RandomCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize(MEAN, STD)])

under `torch.utils.data.DataLoader(batch_size, num_workers)`. torchvision itself is not
a dependency of this project (its wheels pin a torch build, and a plain `pip install`
can pull a multi-GB CUDA torch), so the four transforms are written out here as
torchvision 0.2x implements them for PIL images: the crop and the flip on the PIL image,
ToTensor's uint8 HWC -> float CHW / 255, Normalize's per-channel (x - mean) / std.
No PCA lighting and no mean image: less arithmetic per pixel than ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the constants users copy from the torchvision docs
IMAGENET_STD = (0.229, 0.224, 0.225)


class PaperTransform:
    """RandomCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize(MEAN, STD)."""

    def __init__(self):
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        i = int(torch.randint(0, h - CROP + 1, (1,)))
        j = int(torch.randint(0, w - CROP + 1, (1,)))
        img = img.crop((j, i, j + CROP, i + CROP))
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(CROP, CROP, 3)
        x = x.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std)


def make_torchvision_style_loader(data: Path, batch_size: int, workers: int, context=None,
                                  pin_memory: bool = False) -> DataLoader:
    shards = [str(p) for p in sorted(Path(data).glob("train-*.tar"))]
    dataset = (wds.WebDataset(shards, shardshuffle=len(shards), empty_check=False)
               .shuffle(1000).decode("pil").to_tuple("jpg", "cls").map_tuple(PaperTransform(), int))
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, multiprocessing_context=context,
                      pin_memory=pin_memory)
