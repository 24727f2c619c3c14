import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from d2p_helpers.record import set_threads  # noqa: E402

set_threads(1)   # one thread: the suite shares a 2-core machine; results must not depend on it


@pytest.fixture(autouse=True)
def _self_text_in_tmp(tmp_path_factory, monkeypatch):
    """Generated calibration text goes to a fresh folder per test: no test reads another's text back, and the
    user's cache stays as it was."""
    from d2p_helpers import data
    folder = tmp_path_factory.mktemp("self_text")
    monkeypatch.setattr(data, "self_text_dir", lambda: folder)


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


@pytest.fixture
def run_cli(capsys):
    """`d2p ARGS` in this process (no interpreter start-up): returns (exit status, stdout, stderr)."""
    from d2p_helpers.cli import main

    def call(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:          # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return call
