import torch

from types import SimpleNamespace

from ai_t2i_attention.preview import _RAMP, before_after_tiles, colorize, heatmaps, tile_size


def _maps():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 4, 4, generator=g)


def test_heatmaps_shape_and_range():
    out = heatmaps(_maps(), size=(8, 12))
    assert out.shape == (6, 8, 12, 3)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


def test_heatmaps_are_image_major_and_normalised_per_map():
    maps = _maps()
    out = heatmaps(maps, size=(8, 8))
    for b in range(2):
        for s in range(3):
            torch.testing.assert_close(out[b * 3 + s], heatmaps(maps[b:b + 1, s:s + 1], size=(8, 8))[0])
            # scale does not matter: each map is normalised to its own min..max
            torch.testing.assert_close(out[b * 3 + s], heatmaps(maps[b:b + 1, s:s + 1] * 7 + 2, size=(8, 8))[0])


def test_heatmap_extremes_use_the_ramp_ends():
    m = torch.full((1, 1, 4, 4), 0.5)
    m[0, 0, 0, 0] = 2.0  # max in a corner
    m[0, 0, 3, 3] = 0.0  # min in the opposite corner
    out = heatmaps(m, size=(8, 8))[0]
    torch.testing.assert_close(out[0, 0], _RAMP[-1])
    torch.testing.assert_close(out[7, 7], _RAMP[0])


def test_constant_map_is_finite():
    out = heatmaps(torch.ones(1, 2, 4, 4), size=(4, 4))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _RAMP[0].expand(2, 4, 4, 3))


def test_colorize_interpolates_the_ramp():
    v = torch.tensor([0.0, 1 / 6, 1 / 3, 0.5, 1.0, 1.5, -1.0])
    c = colorize(v)
    torch.testing.assert_close(c[0], _RAMP[0])
    torch.testing.assert_close(c[1], (_RAMP[0] + _RAMP[1]) / 2)
    torch.testing.assert_close(c[2], _RAMP[1])
    torch.testing.assert_close(c[3], (_RAMP[1] + _RAMP[2]) / 2)
    torch.testing.assert_close(c[4], _RAMP[3])
    torch.testing.assert_close(c[5], _RAMP[3])  # clamped
    torch.testing.assert_close(c[6], _RAMP[0])


def test_heatmaps_blend_over_image():
    maps = _maps()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 8, 8, 3, generator=g)
    plain = heatmaps(maps, size=(8, 8))
    blended = heatmaps(maps, size=(8, 8), image=image, opacity=0.6)
    assert blended.shape == (6, 8, 8, 3)
    base = image.repeat_interleave(3, dim=0)  # image b under each of its subjects
    torch.testing.assert_close(blended, base * 0.4 + plain * 0.6)
    torch.testing.assert_close(heatmaps(maps, size=(8, 8), image=image, opacity=0.0), base)
    torch.testing.assert_close(heatmaps(maps, size=(8, 8), image=image, opacity=1.0), plain)
    # subject 2 of image 1 sits over image 1, not image 0
    torch.testing.assert_close(blended[5], image[1] * 0.4 + plain[5] * 0.6)
    assert blended.min() >= 0 and blended.max() <= 1


def test_tile_size_keeps_the_maps_aspect_ratio():
    assert tile_size((16, 16)) == (256, 256)
    assert tile_size((16, 11)) == (256, 176)  # a 512 x 768 Flux image's maps: tall, not squashed square
    assert tile_size((12, 8)) == (256, 171)
    assert tile_size((8, 12)) == (171, 256)
    assert tile_size((1, 1000), longest=64) == (1, 64)


def _record(hw=(12, 8), after=False):
    """A run record's preview fields: 2 guided steps of (1 image, 2 subjects) maps."""
    g = torch.Generator().manual_seed(2)
    maps = {k: torch.rand(1, 2, *hw, generator=g) for k in (0, 3)}
    maps_after = {k: torch.rand(1, 2, *hw, generator=g) for k in (0, 3)} if after else {}
    return SimpleNamespace(maps=maps, maps_after=maps_after, subjects=["cat", "dog"])


def test_before_after_tiles_of_a_non_square_latent_keep_its_shape():
    """12 x 8 maps (a 24 x 16 latent at half resolution): the tiles are 256 x 171, the maps
    resampled to that shape, not stretched to a square."""
    record = _record()
    tiles, legend = before_after_tiles(record, [0, 3])
    assert tiles.shape == (2 * 2, 256, 171, 3)
    torch.testing.assert_close(tiles[:2], heatmaps(record.maps[0], (256, 171)))
    torch.testing.assert_close(tiles[2:], heatmaps(record.maps[3], (256, 171)))
    assert legend.splitlines()[1:] == ["step 0 before update: image 0 cat, image 0 dog",
                                       "step 3 before update: image 0 cat, image 0 dog"]


def test_before_after_tiles_take_the_images_size_and_order_before_after():
    record = _record(after=True)
    image = torch.rand(1, 40, 30, 3, generator=torch.Generator().manual_seed(3))
    tiles, legend = before_after_tiles(record, [3], image)
    assert tiles.shape == (2 * 2, 40, 30, 3)
    torch.testing.assert_close(tiles[:2], heatmaps(record.maps[3], (40, 30), image))
    torch.testing.assert_close(tiles[2:], heatmaps(record.maps_after[3], (40, 30), image))
    assert [line.split(":")[0] for line in legend.splitlines()[1:]] == ["step 3 before update", "step 3 after update"]
