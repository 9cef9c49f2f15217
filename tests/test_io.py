import numpy as np
import pytest

from facerig.io import atomic_path, atomic_write, write_image


def test_atomic_write_round_trip_and_no_leftovers(tmp_path):
    p = atomic_write(tmp_path / "sub" / "a.txt", "hello")
    assert p.read_text() == "hello"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.bin"]


def test_write_image_png_round_trip(tmp_path):
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_image(tmp_path / "x.png", rgb)
    back = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(back, rgb)
    write_image(tmp_path / "f.png", rgb / 255.0)  # float input in [0, 1]
    back = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(back, rgb)
    with pytest.raises(ValueError, match="image"):
        write_image(tmp_path / "bad.png", np.zeros((2, 2, 2)))


def test_network_file_round_trip_half_precision(tmp_path):
    """save_network / load_network: weights come back as their float16 rounding, config and meta kept;
    a file of another tag or a missing file is refused with the argument named."""
    import pytest
    import torch

    from facerig.io import load_network, read_network, save_network

    class Net(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.config = {"width": width}
            self.lin = torch.nn.Linear(3, width)

    torch.manual_seed(0)
    net = Net(4)
    path = save_network(tmp_path / "sub" / "net.pt", net, "demo", config=net.config, extra={"meta": {"steps": 7}})
    back = load_network(path, "demo", Net, what="demo network", hint="make one")
    assert back.lin.weight.dtype == torch.float32 and not back.training and back.meta == {"steps": 7}
    assert torch.equal(back.lin.weight, net.lin.weight.detach().half().float())
    assert (back.lin.weight - net.lin.weight).abs().max() <= 2 ** -11 * net.lin.weight.abs().max()
    with pytest.raises(ValueError, match="model: .* is not a other network"):
        read_network(path, "other", what="other network", hint="-", arg="model")
    with pytest.raises(FileNotFoundError, match=r"path: demo network .*missing.pt does not exist \(make one\)"):
        read_network(tmp_path / "missing.pt", "demo", what="demo network", hint="make one")
