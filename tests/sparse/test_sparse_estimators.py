"""Estimators: input validation with clear errors, NumPy / torch in-out, scikit-learn conventions,
dictionary learning and patch data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.sparse import LISTA, DictionaryLearning, SparseCoder, sparse_encode
from facerig.sparse.data import extract_patches, gaussian_dictionary, preprocess_patches
from facerig.sparse.lasso import lasso_objective


def _problem(seed=0, n=20):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((16, 8))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return rng.standard_normal((n, 8)), D


@pytest.mark.parametrize("bad, match", [
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(algorithm="lars"), "algorithm"),
    (dict(max_iter=0), "max_iter"),
    (dict(dictionary=np.zeros((0, 8))), "zero atoms"),
    (dict(dictionary=np.vstack([np.ones((3, 8)), np.zeros((1, 8))])), "zero norm"),
    (dict(dictionary=np.full((4, 8), np.nan)), "NaN"),
    (dict(dictionary=np.ones(8)), "2-D"),
])
def test_sparse_coder_rejects_bad_parameters(bad, match):
    X, D = _problem()
    params = dict(dictionary=D, alpha=0.1)
    params.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        SparseCoder(**params).fit_transform(X)


def test_sparse_coder_rejects_bad_samples():
    X, D = _problem()
    coder = SparseCoder(D, alpha=0.1)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        coder.transform(X_nan)
    with pytest.raises(ValueError, match="X has 5 features but the dictionary has 8"):
        coder.transform(X[:, :5])
    with pytest.raises(ValueError, match="X must be 2-D"):
        coder.transform(X[0])
    with pytest.raises(TypeError, match="X must be"):
        coder.transform("not an array")


def test_numpy_and_torch_in_out():
    X, D = _problem()
    coder = SparseCoder(D, alpha=0.1, tol=1e-8)
    Y = coder.fit_transform(X)
    assert isinstance(Y, np.ndarray) and Y.shape == (20, 16) and Y.dtype == np.float64
    Yt = coder.transform(torch.from_numpy(X).float())
    assert isinstance(Yt, torch.Tensor) and Yt.shape == (20, 16)
    assert Yt.dtype == torch.float64  # the dictionary's dtype
    np.testing.assert_allclose(Yt.numpy(), Y, atol=1e-5)
    coder32 = SparseCoder(torch.from_numpy(D).float(), alpha=0.1, tol=1e-5)
    assert coder32.transform(torch.from_numpy(X).float()).dtype == torch.float32


def test_score_and_objective_and_sklearn_clone():
    sklearn_base = pytest.importorskip("sklearn.base")
    X, D = _problem(1)
    coder = SparseCoder(D, alpha=0.2, tol=1e-9)
    Y = coder.fit(X).transform(X)
    obj = coder.objective(X, Y)
    assert obj.shape == (20,)
    assert coder.score(X) == pytest.approx(-obj.mean(), rel=1e-9)
    rough = SparseCoder(D, alpha=0.2, algorithm="ista", tol=0, max_iter=3)
    assert rough.score(X) < coder.score(X)
    clone = sklearn_base.clone(coder)
    assert clone.get_params()["alpha"] == 0.2 and clone is not coder
    coder.set_params(alpha=0.5)
    assert coder.alpha == 0.5
    with pytest.raises(ValueError, match="invalid parameter 'beta'"):
        coder.set_params(beta=1)


def test_lista_estimator_fit_transform_and_alpha_at_inference():
    D = gaussian_dictionary(16, 8, seed=2, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 8, generator=g)
    est = LISTA(D, n_layers=3, parametrization="step", mode="unsupervised", alpha=0.1, n_steps=60,
                batch_size=32, lr=1e-3)
    Y = est.fit(X).transform(X)
    assert isinstance(Y, torch.Tensor) and Y.shape == (128, 16)
    Yn = est.transform(X.numpy())
    assert isinstance(Yn, np.ndarray)
    np.testing.assert_allclose(Yn, Y.numpy(), atol=1e-6)
    # a larger alpha gives sparser codes
    assert (est.transform(X, alpha=0.5) != 0).sum() < (Y != 0).sum()
    r = est.train_result_
    assert r.final_loss["unsupervised"] < r.initial_loss["unsupervised"]
    with pytest.raises(ValueError, match="parametrization"):
        LISTA(D, parametrization="deep").fit(X)
    with pytest.raises(ValueError, match="mode"):
        LISTA(D, mode="reinforcement").fit(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        LISTA(D).transform(X)


def test_sparse_coder_lista_algorithm():
    D = gaussian_dictionary(16, 8, seed=3, dtype=torch.float32)
    X = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    coder = SparseCoder(D, alpha=0.1, algorithm="lista", n_layers=2,
                        lista_params=dict(mode="unsupervised", n_steps=30, batch_size=32))
    with pytest.raises(RuntimeError, match="not fitted"):
        coder.transform(X)
    Y = coder.fit(X).transform(X)
    assert Y.shape == (64, 16) and coder.lista_.net_.n_layers == 2


def test_dictionary_learning_lowers_objective_and_keeps_unit_atoms():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((12, 8))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    codes = rng.standard_normal((600, 12)) * (rng.random((600, 12)) < 0.2)
    X = codes @ true + 0.01 * rng.standard_normal((600, 8))
    dl = DictionaryLearning(n_atoms=12, alpha=0.05, n_steps=60, batch_size=64, seed=0)
    dl.fit(X)
    assert isinstance(dl.components_, np.ndarray) and dl.components_.shape == (12, 8)
    np.testing.assert_allclose(np.linalg.norm(dl.components_, axis=1), 1.0, atol=1e-6)
    assert len(dl.history_) == 60

    def objective(Dm):
        Y = sparse_encode(X, Dm, 0.05)
        return float(lasso_objective(torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(Dm), 0.05).mean())

    random = rng.standard_normal((12, 8))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    learned = -dl.score(X)
    assert learned == pytest.approx(objective(dl.components_), rel=1e-9)
    assert learned < 0.8 * objective(random)
    assert learned < 1.25 * objective(true)  # close to the generating dictionary


def test_patches_extraction_and_preprocessing():
    img = np.arange(30 * 40, dtype=float).reshape(30, 40)
    all_p = extract_patches(img, 10)
    assert all_p.shape == (21 * 31, 100)
    np.testing.assert_array_equal(all_p[1].reshape(10, 10), img[0:10, 1:11])
    some = extract_patches(img, 10, n_patches=7, rng=0)
    assert some.shape == (7, 100)
    P, keep = preprocess_patches(np.vstack([all_p[:5], np.ones((1, 100))]))
    assert keep.tolist() == [True] * 5 + [False]  # the flat patch is dropped
    np.testing.assert_allclose(P.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1, atol=1e-12)
    with pytest.raises(ValueError, match="patch_size"):
        extract_patches(img, 50)
