import torch

from ai_t2i_attention import Regions, centroid, find_regions
from ai_t2i_attention.regions import pixel_grid

H = W = 16


def blob(cy, cx, sigma=1.0, h=H, w=W):
    g = pixel_grid(h, w)
    return torch.exp(-((g[..., 0] - cy) ** 2 + (g[..., 1] - cx) ** 2) / (2 * sigma ** 2))


def test_pixel_grid_is_y_x():
    g = pixel_grid(3, 5)
    assert g.shape == (3, 5, 2)
    assert g[2, 4].tolist() == [2.0, 4.0]
    assert g[1, 3].tolist() == [1.0, 3.0]


def test_centroid_of_single_pixel_is_that_pixel():
    for y, x in [(0, 0), (3, 11), (15, 2), (7, 15)]:
        m = torch.zeros(H, W)
        m[y, x] = 0.37
        torch.testing.assert_close(centroid(m), torch.tensor([float(y), float(x)]))


def test_centroid_weighted_mean_and_batch_shapes():
    m = torch.zeros(2, 3, 8, 10)
    m[0, 0, 2, 2] = 1.0
    m[0, 0, 2, 8] = 3.0  # x: (2*1 + 8*3)/4 = 6.5
    m[1, 2, 5, 0] = 1.0
    m[1, 2, 1, 4] = 1.0
    c = centroid(m)
    assert c.shape == (2, 3, 2)
    torch.testing.assert_close(c[0, 0], torch.tensor([2.0, 6.5]))
    torch.testing.assert_close(c[1, 2], torch.tensor([3.0, 2.0]))
    assert c[0, 1].tolist() == [0.0, 0.0]  # empty map: finite, no division by zero


def test_find_regions_three_blobs_in_order_of_height():
    centres = [(11.0, 4.0), (3.0, 3.0), (7.0, 12.0)]
    heights = [0.5, 1.0, 0.75]
    m = sum(h * blob(*c) for h, c in zip(heights, centres))
    reg = find_regions(m[None], k=3, radius=4.0)
    assert isinstance(reg, Regions)
    assert reg.centroids.shape == (1, 3, 2) and reg.valid.shape == (1, 3) and reg.peak.shape == (1, 2)
    assert reg.peak[0].tolist() == [3.0, 3.0]
    by_height = [centres[i] for i in sorted(range(3), key=lambda i: -heights[i])]
    for j, (cy, cx) in enumerate(by_height):
        d = (reg.centroids[0, j] - torch.tensor([cy, cx])).norm()
        assert d < 0.3, (j, reg.centroids[0, j].tolist(), (cy, cx))
    assert reg.valid.all()


def test_find_regions_batch_is_per_image():
    a = blob(3, 3) + 0.5 * blob(12, 12)
    b = blob(12, 4) + 0.6 * blob(4, 12)
    reg = find_regions(torch.stack([a, b]), k=2, radius=4.0)
    assert reg.peak.tolist() == [[3.0, 3.0], [12.0, 4.0]]
    torch.testing.assert_close(reg.centroids[0, 1], torch.tensor([12.0, 12.0]), atol=0.2, rtol=0)
    torch.testing.assert_close(reg.centroids[1, 1], torch.tensor([4.0, 12.0]), atol=0.2, rtol=0)
    # image 0 alone gives the same regions as in the batch
    alone = find_regions(a[None], k=2, radius=4.0)
    torch.testing.assert_close(alone.centroids[0], reg.centroids[0])


def test_find_regions_invalid_when_map_exhausted():
    m = torch.zeros(1, H, W)
    m[0, 5, 6] = 1.0
    m[0, 5, 7] = 0.5  # inside the first disc
    reg = find_regions(m, k=3, radius=3.0)
    assert reg.valid.tolist() == [[True, False, False]]
    torch.testing.assert_close(reg.centroids[0, 0], torch.tensor([5.0, 6.0 + 0.5 / 1.5]))
    empty = find_regions(torch.zeros(2, H, W), k=2, radius=3.0)
    assert not empty.valid.any()
    assert torch.isfinite(empty.centroids).all()


def test_find_regions_second_region_outside_first_disc():
    # A wide plateau: the second search starts outside the first disc (squared distance
    # >= r^2), but its centroid is taken on the original map, so it leans back toward p1.
    m = blob(8, 8, sigma=4.0)[None]
    reg = find_regions(m, k=2, radius=3.0)
    assert (reg.peaks[0, 1] - reg.peak[0]).norm() >= 3.0
    torch.testing.assert_close(reg.peaks[:, 0], reg.peak)
    g = pixel_grid(H, W)
    disc2 = (((g - reg.peaks[0, 1]) ** 2).sum(-1) < 9.0).float()
    torch.testing.assert_close(reg.centroids[0, 1], centroid(m[0] * disc2))
    assert (reg.centroids[0, 1] - reg.peak[0]).norm() < (reg.peaks[0, 1] - reg.peak[0]).norm()


def test_find_regions_gradient_flows_to_map_values():
    m = (blob(3, 3) + 0.6 * blob(12, 12)).clone()[None].requires_grad_(True)
    reg = find_regions(m, k=2, radius=4.0)
    assert reg.centroids.requires_grad and not reg.peak.requires_grad
    reg.centroids[0, 1, 1].backward()  # x of the second region's centroid
    grad = m.grad[0]
    assert torch.isfinite(grad).all()
    # Pixels right of the second centroid pull it right (positive gradient), left ones negative.
    assert grad[12, 14] > 0 and grad[12, 10] < 0
    # Pixels of the first disc, already removed, do not influence the second centroid.
    assert float(grad[3, 3]) == 0.0 and float(grad[1:6, 1:6].abs().sum()) == 0.0
    # Hand check: d c_x / d m[p] = (x_p - c_x) / mass inside the disc.
    g = pixel_grid(H, W)
    inside = (((g - torch.tensor([12.0, 12.0])) ** 2).sum(-1) < 16.0).float()  # strict: 49 pixels at r = 4
    mm = m.detach()[0] * inside
    cx = float((mm * g[..., 1]).sum() / mm.sum())
    expected = (g[..., 1] - cx) / mm.sum() * inside
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)
