"""``facerig sparse encode`` / ``learn`` through the real command line."""

from __future__ import annotations

import numpy as np

from facerig.cli import main
from facerig.sparse.lasso import sparse_encode


def _run(argv):
    return main(argv)


def test_encode_writes_the_lasso_codes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    D = rng.standard_normal((12, 6))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((9, 6))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "D.npy", D)
    out = tmp_path / "sub" / "codes.npy"
    assert _run(["sparse", "encode", str(tmp_path / "X.npy"), "--dictionary", str(tmp_path / "D.npy"),
                 "-o", str(out), "--alpha", "0.2", "--tol", "1e-9"]) == 0
    np.testing.assert_allclose(np.load(out), sparse_encode(X, D, 0.2, tol=1e-9), atol=1e-7)
    assert "encoded 9 samples on 12 atoms" in capsys.readouterr().out
    assert _run(["sparse", "encode", str(tmp_path / "nope.npy"), "--dictionary", str(tmp_path / "D.npy"),
                 "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "X5.npy", X[:, :5])
    assert _run(["sparse", "encode", str(tmp_path / "X5.npy"), "--dictionary", str(tmp_path / "D.npy"),
                 "-o", str(out)]) == 2
    assert "X has 5 features but the dictionary has 6" in capsys.readouterr().err
