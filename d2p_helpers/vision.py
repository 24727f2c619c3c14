"""Vision: ViT/DeiT/DINOv2 (timm or transformers) through the same pruner, real images, and the metrics the
backbone allows.

Data: `fashion-mnist` (Debian's dataset-fashion-mnist, real labelled images) or `imagenet:PATH` (an
ImageFolder tree, for users who have ImageNet). Metrics: top-1 with the model's own classifier when it has
one; otherwise a k-NN probe on CLS features (fit on train images, scored on test images), plus the cosine
between pruned and dense CLS features and the attention KL.

Preprocessing: timm models on ImageNet get timm's own eval transform (their data config: resize, centre
crop, interpolation, mean/std); everything else is resized to the model's input size and normalised with
the model's statistics (ImageNet's for transformers models and the embedded ViT)."""
from __future__ import annotations

import gzip
import io
import weakref
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .assets import FASHION_MNIST_DIR, AssetError, skimage_wheel

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_right.png")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split: str, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [n, 28, 28] uint8, labels [n]); a seeded subset of `limit` when given."""
    prefix = {"train": "train", "test": "t10k"}[split]
    img_path = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.exists():
        raise AssetError(f"Fashion-MNIST not found at {FASHION_MNIST_DIR}; install Debian's dataset-fashion-mnist "
                         "(`make setup` does) or set D2P_FASHION_MNIST")
    images = torch.from_numpy(_idx(img_path).copy())
    labels = torch.from_numpy(_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    if limit and limit < len(labels):
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit]
        images, labels = images[idx], labels[idx]
    return images, labels


def imagefolder(path: str, limit: int | None = None, seed: int = 0) -> tuple[list, torch.Tensor, list[str]]:
    """An ImageFolder tree: class subfolders in sorted order (ImageNet's synset order) -> (files, labels, classes)."""
    root = Path(path)
    if not root.is_dir():
        raise AssetError(f"imagenet:PATH needs an ImageFolder directory, not found: {path}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.is_file()]
    if limit and limit < len(files):
        g = torch.Generator().manual_seed(seed)
        files = [files[int(i)] for i in torch.randperm(len(files), generator=g)[:limit]]
    return [f for f, _ in files], torch.tensor([i for _, i in files]), classes


class LazyImages:
    """Image files decoded and transformed a batch at a time (slices give [n, 3, S, S]): an ImageNet split
    never sits in memory whole."""

    def __init__(self, files: list, transform):
        self.files, self.transform = files, transform

    def _load(self, path) -> torch.Tensor:
        from PIL import Image
        with Image.open(path) as im:
            return self.transform(im.convert("RGB"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return torch.stack([self._load(f) for f in self.files[index]])
        return self._load(self.files[index])

    def __iter__(self):
        return (self._load(f) for f in self.files)


def photos() -> dict:
    """Real photos from scikit-image's wheel (a cat, an astronaut, coffee...), for looking, not scoring."""
    from PIL import Image
    wheel = skimage_wheel()
    if wheel is None:
        raise AssetError("scikit-image wheel not under data/wheels/; run `make setup`")
    zf = zipfile.ZipFile(wheel)
    return {name.split(".")[0]: Image.open(io.BytesIO(zf.read(f"skimage/data/{name}"))).convert("RGB") for name in PHOTOS}


def preprocess(images, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [n, H, W] greys or PIL images (any sizes) -> normalised [n, 3, size, size] float, bilinear resize."""
    if isinstance(images, torch.Tensor):
        x = images.float().div(255)[:, None].expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    else:
        x = torch.cat([F.interpolate(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None],
                                     size=(size, size), mode="bilinear", align_corners=False) for im in images])
    mean, std = torch.as_tensor(mean).reshape(-1, 1, 1), torch.as_tensor(std).reshape(-1, 1, 1)
    return (x - mean) / std


def input_spec(model=None) -> dict:
    """Input size and normalisation a model expects: timm's data config for timm models, else 224 px ImageNet."""
    from .models import is_timm
    if model is None or not is_timm(model):
        return {"size": 224, "mean": IMAGENET_MEAN.flatten().tolist(), "std": IMAGENET_STD.flatten().tolist()}
    from timm.data import resolve_data_config
    cfg = resolve_data_config({}, model=model)
    return {"size": int(model.patch_embed.img_size[0]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "timm_data_config": cfg}


def load_images(spec: str, split: str, limit: int | None, seed: int = 0, model=None):
    """(pixels [n, 3, S, S], labels [n]) prepared for `model` (see the module docstring); for imagenet:PATH the
    pixels are a LazyImages that loads a slice at a time."""
    inp = input_spec(model)
    if spec == "fashion-mnist":
        imgs, labels = fashion_mnist(split, limit, seed)
        return preprocess(imgs, inp["size"], inp["mean"], inp["std"]), labels
    if spec.startswith("imagenet:"):
        sub = Path(spec.split(":", 1)[1]) / ("train" if split == "train" else "val")
        files, labels, _ = imagefolder(str(sub if sub.exists() else spec.split(":", 1)[1]), limit, seed)
        if "timm_data_config" in inp:
            from timm.data import create_transform
            transform = create_transform(**inp["timm_data_config"], is_training=False)
        else:
            transform = lambda im: preprocess([im], inp["size"], inp["mean"], inp["std"])[0]  # noqa: E731
        return LazyImages(files, transform), labels
    raise AssetError(f"unknown image data '{spec}': expected fashion-mnist or imagenet:PATH")


def calibration_samples(spec: str, nsamples: int, seed: int, model=None) -> list[dict]:
    """`nsamples` train images (seeded choice) as model-input dicts, prepared for `model`."""
    x, _ = load_images(spec, "train", nsamples, seed, model)
    return [{"pixel_values": xi[None]} for xi in x]


def _timm_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm: pooled pre-logits features (CLS after the final norm; DeiT: mean of CLS and distillation token)
    and the head's logits when there is a head."""
    tokens = model.forward_features(x)
    feats = model.forward_head(tokens, pre_logits=True)
    return feats, (model.forward_head(tokens) if model.num_classes else None)


@torch.no_grad()
def features(model, pixels: torch.Tensor, batch_size: int = 32, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(CLS features [n, d], classifier logits [n, C] or None). transformers classifiers: logits serve as both."""
    from .models import is_timm
    timm_model, device = is_timm(model), next(model.parameters()).device
    feats, logits = [], []
    for i in tqdm(range(0, len(pixels), batch_size), desc="features", disable=not progress, leave=False):
        x = pixels[i:i + batch_size].to(device)
        if timm_model:
            f, lg = _timm_outputs(model, x)
            feats.append(f.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
            continue
        out = model(pixel_values=x)
        if hasattr(out, "logits"):
            logits.append(out.logits.float().cpu())
            feats.append(out.logits.float().cpu())
        else:
            pooled = getattr(out, "pooler_output", None)
            feats.append((pooled if pooled is not None else out.last_hidden_state[:, 0]).float().cpu())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def knn_top1(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int = 10) -> float:
    """Cosine k-NN, majority vote weighted by similarity."""
    a, b = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    sim, idx = (b @ a.t()).topk(k, dim=1)
    votes = torch.zeros(len(test_f), int(train_y.max()) + 1).scatter_add_(1, train_y[idx], sim)
    return float((votes.argmax(1) == test_y).float().mean())


# The dense model's features are the same for every pruned model compared to it. Keyed weakly by the model
# object: an id() key could be reused by a later model at the same address and return its predecessor's features.
_DENSE_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dense_reference(dense, spec: str, train_n: int = 1000, test_n: int = 500, seed: int = 0, cache_file=None) -> None:
    """Compute (or read from `cache_file`, a torch file) the dense model's features once, for every later
    evaluate(pruned, dense, ...) with the same images; a resumed study then skips the dense forward passes."""
    key = (spec, train_n, test_n, seed)
    if key in _DENSE_FEATURES.get(dense, {}):
        return
    if cache_file is not None and Path(cache_file).exists():
        _DENSE_FEATURES.setdefault(dense, {})[key] = tuple(torch.load(cache_file))
        return
    fte, logits = features(dense, load_images(spec, "test", test_n, seed, dense)[0])
    ftr = None
    if logits is None or not spec.startswith("imagenet:"):
        ftr, _ = features(dense, load_images(spec, "train", train_n, seed, dense)[0])
    _DENSE_FEATURES.setdefault(dense, {})[key] = (ftr, fte, logits)
    if cache_file is not None:
        from .record import replace_file
        with replace_file(cache_file) as tmp:
            torch.save([ftr, fte, logits], tmp)


def evaluate(model, dense, spec: str, train_n: int = 1000, test_n: int = 500, seed: int = 0,
             attention_images: int = 4, progress: bool = False) -> dict:
    """The `vision` record: top-1 (own classifier, ImageNet) or k-NN top-1, for pruned and dense, CLS cosine and
    attention KL. Train images are read only for the k-NN probe."""
    from .attention import compare_attention
    xte, yte = load_images(spec, "test", test_n, seed, dense)
    train = []                                         # (pixels, labels), loaded when a k-NN probe needs them
    out = {"data": spec, "test_images": len(yte)}
    for tag, m in (("pruned", model), ("dense", dense)):
        key = (spec, train_n, test_n, seed)
        if tag == "dense" and m is model:
            pass                                       # evaluate(dense, dense): the same features again
        elif tag == "dense" and key in _DENSE_FEATURES.get(m, {}):
            ftr, fte, logits = _DENSE_FEATURES[m][key]
        else:
            fte, logits = features(m, xte, progress=progress)
            ftr = None
            if logits is None or not spec.startswith("imagenet:"):
                train = train or [load_images(spec, "train", train_n, seed, dense)]
                ftr, _ = features(m, train[0][0], progress=progress)
            if tag == "dense" and m is not model:
                _DENSE_FEATURES.setdefault(m, {})[key] = (ftr, fte, logits)
        if ftr is None:
            out[f"top1_{tag}"] = float((logits.argmax(1) == yte).float().mean())
        else:
            train = train or [load_images(spec, "train", train_n, seed, dense)]
            out["train_images"] = len(train[0][1])
            out[f"knn_top1_{tag}"] = knn_top1(ftr, train[0][1], fte, yte)
        out[f"_feat_{tag}"] = fte
    out["cls_cosine"] = float(F.cosine_similarity(out.pop("_feat_pruned"), out.pop("_feat_dense"), dim=1).mean())
    att = compare_attention(model, dense, [{"pixel_values": x[None]} for x in xte[:attention_images]], progress=progress)
    out["attention_kl"], out["attention_rmse"] = att["mean_kl"], att["mean_rmse"]
    out["attention_per_block"] = att["per_block"]
    if "train_images" in out:
        out["knn"] = "cosine k-NN, k = 10, on CLS features (pooler output), train -> test subsets"
    out["input"] = {k: v for k, v in input_spec(dense).items() if k != "timm_data_config"}
    return out
