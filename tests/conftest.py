import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tokenizer():
    from d2p_helpers.models import load_tokenizer
    return load_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    from d2p_helpers.models import load_model
    return load_model("smollm2-135m")


def tiny(name="tiny-llama", seed=0):
    from d2p_helpers.models import load_model
    return load_model(name, seed=seed)
