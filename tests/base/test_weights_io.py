"""Weight archives (float16, refused on an architecture mismatch) and file checksums."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.base.weights_io import load_member_weights, save_member_weights, sha256_file


class ArrayModel:
    """The part of a Keras model the archive functions use: a name and a list of arrays."""

    def __init__(self, name: str, weights: list[np.ndarray]):
        self.name = name
        self.weights = [np.array(w) for w in weights]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.weights = [np.array(w) for w in weights]


def _model(seed: int = 0, shapes=((3, 4), (4,), (2, 2, 3))) -> ArrayModel:
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(0, 2, s).astype(np.float32) for s in shapes]
    return ArrayModel("toy", [*arrays, np.array([7, -3, 1000], np.int64)])


def test_sha256_file_matches_hashlib_across_read_chunks(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(1).integers(0, 256, (1 << 20) * 2 + 12345, np.uint8).tobytes()
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped at the very end
    assert sha256_file(path) != hashlib.sha256(data).hexdigest()


def test_round_trip_stores_float16_and_restores_the_rounded_weights(tmp_path):
    source = _model(0)
    path = tmp_path / "member.npz"
    save_member_weights(source, path)
    with np.load(path) as archive:
        assert archive.files == ["w0000", "w0001", "w0002", "w0003"]
        assert [archive[k].dtype for k in archive.files[:3]] == [np.float16] * 3
        assert archive["w0003"].dtype == np.int64  # only floating-point arrays are halved
    target = _model(5)
    load_member_weights(target, path)
    for loaded, original in zip(target.get_weights(), source.get_weights()):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        expected = original.astype(np.float16).astype(original.dtype) if original.dtype.kind == "f" \
            else original
        np.testing.assert_array_equal(loaded, expected)
        if original.dtype.kind == "f":  # float16: ~1e-3 relative error, never more
            np.testing.assert_allclose(loaded, original, rtol=1e-3, atol=1e-4)


def test_saving_is_deterministic_so_checksums_are_stable(tmp_path):
    save_member_weights(_model(0), tmp_path / "a.npz")
    save_member_weights(_model(0), tmp_path / "b.npz")
    save_member_weights(_model(1), tmp_path / "c.npz")
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    assert sha256_file(tmp_path / "a.npz") != sha256_file(tmp_path / "c.npz")


@pytest.mark.parametrize("other", [((3, 4), (4,)), ((3, 4), (5,), (2, 2, 3)),
                                   ((3, 4), (4,), (2, 2, 3), (1,))])
def test_an_archive_of_another_architecture_is_refused(tmp_path, other):
    path = tmp_path / "member.npz"
    save_member_weights(_model(0), path)
    rng = np.random.default_rng(2)
    target = ArrayModel("OtherNet", [rng.random(s).astype(np.float32) for s in other])
    before = target.get_weights()
    with pytest.raises(BundleError, match=r"member\.npz do not fit the OtherNet architecture"):
        load_member_weights(target, path)
    for kept, original in zip(target.get_weights(), before):  # nothing was half-loaded
        np.testing.assert_array_equal(kept, original)

