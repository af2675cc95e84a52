"""SPEC §5: every bad input gets a clear exception naming the value or shape at
fault, raised before anything is computed (inputs and in-place buffers stay
untouched)."""

import numpy as np
import pytest

import fastsoftmax as fs

CE_FUNCS = [fs.cross_entropy, fs.cross_entropy_with_grad, fs.nll_loss]


def _logits(rng, n=4, c=5):
    return rng.normal(size=(n, c))


@pytest.mark.parametrize("f", CE_FUNCS)
@pytest.mark.parametrize("bad", [5, -5, 7, 2**40, -(2**40), np.iinfo(np.int64).max,
                                 np.iinfo(np.int64).min])
def test_target_out_of_range_is_indexerror(rng, f, bad):
    x = _logits(rng)
    before = x.copy()
    t = np.array([0, 1, bad, 2], dtype=np.int64)
    with pytest.raises(IndexError) as exc:
        f(x, t)
    msg = str(exc.value)
    assert str(bad) in msg and "(2,)" in msg and "5 classes" in msg
    assert np.array_equal(x, before)


def test_target_out_of_range_positions_in_nd_and_unsigned(rng):
    x = rng.normal(size=(2, 5, 3))
    t = np.zeros((2, 3), np.int64)
    t[1, 2] = 9
    with pytest.raises(IndexError, match=r"9 at position \(1, 2\)"):
        fs.cross_entropy(x, t, axis=1)
    t = np.zeros(4, np.uint64)
    t[3] = np.uint64(2**64 - 1)
    with pytest.raises(IndexError, match=str(2**64 - 1)):
        fs.cross_entropy(_logits(rng), t)
    t8 = np.array([0, 1, 200, 2], np.uint8)
    with pytest.raises(IndexError, match="200"):
        fs.cross_entropy(_logits(rng), t8)


def test_ignore_index_is_not_an_error(rng):
    x = _logits(rng)
    for ig in (-100, -5, 3, 2**40):
        t = np.array([0, ig, 1, ig], dtype=np.int64)
        assert np.isfinite(fs.cross_entropy(x, t, ignore_index=ig))


def test_inplace_buffer_untouched_after_error(rng):
    x = _logits(rng)
    before = x.copy()
    with pytest.raises(IndexError):
        fs.cross_entropy_with_grad(x, np.array([0, 1, 9, 2]), inplace=True)
    assert np.array_equal(x, before)
    with pytest.raises(ValueError):
        fs.cross_entropy_with_grad(x, np.array([0, 1, 2, 2]), inplace=True, reduction="avg")
    assert np.array_equal(x, before)


@pytest.mark.parametrize("f", CE_FUNCS)
def test_target_shape_mismatch(rng, f):
    x = _logits(rng)
    with pytest.raises(ValueError) as exc:
        f(x, np.zeros(3, np.int64))
    msg = str(exc.value)
    assert "(3,)" in msg and "(4, 5)" in msg and "(4,)" in msg


@pytest.mark.parametrize("f", CE_FUNCS)
def test_float_target_with_per_sample_shape_is_typeerror(rng, f):
    with pytest.raises(TypeError, match="integers"):
        f(_logits(rng), np.zeros(4, np.float64))


@pytest.mark.parametrize("f", CE_FUNCS)
@pytest.mark.parametrize("w", [np.ones(4), np.ones((5, 1)), np.ones(6)])
def test_weight_shape(rng, f, w):
    with pytest.raises(ValueError, match=r"\(5,\)"):
        f(_logits(rng), np.zeros(4, np.int64), weight=w)


@pytest.mark.parametrize("f", CE_FUNCS + [fs.binary_cross_entropy_with_logits,
                                          fs.binary_cross_entropy_with_grad])
def test_reduction_choices(rng, f):
    x = _logits(rng)
    t = np.zeros(4, np.int64) if f in CE_FUNCS else np.zeros((4, 5))
    with pytest.raises(ValueError, match="'mean', 'sum', 'none'"):
        f(x, t, reduction="avg")


@pytest.mark.parametrize("ls", [-0.1, 1.5, np.nan])
def test_label_smoothing_range(rng, ls):
    with pytest.raises(ValueError, match="label_smoothing"):
        fs.cross_entropy(_logits(rng), np.zeros(4, np.int64), label_smoothing=ls)


@pytest.mark.parametrize("z", [-1e-3, np.inf, np.nan])
def test_z_loss_range(rng, z):
    with pytest.raises(ValueError, match="z_loss"):
        fs.cross_entropy_with_grad(_logits(rng), np.zeros(4, np.int64), z_loss=z)


@pytest.mark.parametrize("t", [0, -1.0, np.inf, -np.inf, np.nan, True, "2"])
@pytest.mark.parametrize("f", [fs.softmax, fs.log_softmax])
def test_temperature_range(rng, f, t):
    with pytest.raises(ValueError, match="temperature"):
        f(_logits(rng), temperature=t)


@pytest.mark.parametrize("f", CE_FUNCS[:2])
def test_zero_classes_for_a_loss(f):
    with pytest.raises(ValueError, match="zero classes"):
        f(np.zeros((3, 0)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="zero classes"):
        f(np.zeros((3, 0, 2)), np.zeros((3, 2), np.int64), axis=1)


def test_zero_classes_for_nll():
    with pytest.raises(ValueError, match="zero classes"):
        fs.nll_loss(np.zeros((3, 0)), np.zeros(3, np.int64))


def test_out_with_inplace(rng):
    x = _logits(rng)
    with pytest.raises(ValueError, match="inplace"):
        fs.cross_entropy_with_grad(x, np.zeros(4, np.int64), out=np.empty_like(x), inplace=True)
    with pytest.raises(ValueError, match="inplace"):
        fs.binary_cross_entropy_with_grad(x, np.zeros_like(x), out=np.empty_like(x),
                                          inplace=True)


def test_ignore_index_with_distribution_targets(rng):
    x = _logits(rng)
    q = np.full((4, 5), 0.2)
    with pytest.raises(ValueError, match="ignore_index"):
        fs.cross_entropy(x, q, ignore_index=0)
    assert np.isfinite(fs.cross_entropy(x, q))     # the default is accepted (and unused)


def test_inplace_needs_a_suitable_array(rng):
    with pytest.raises(ValueError, match="ndarray"):
        fs.cross_entropy_with_grad([[1.0, 2.0]], [0], inplace=True)
    with pytest.raises(ValueError, match="float32 or float64"):
        fs.cross_entropy_with_grad(np.ones((2, 3), np.float16), [0, 1], inplace=True)
    with pytest.raises(ValueError, match="C-contiguous"):
        fs.cross_entropy_with_grad(np.ones((3, 2)).T, [0, 1], inplace=True)
    ro = np.ones((2, 3))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        fs.cross_entropy_with_grad(ro, [0, 1], inplace=True)


@pytest.mark.parametrize("f", [fs.softmax_backward, fs.log_softmax_backward,
                               fs.sigmoid_backward])
def test_backward_shapes_must_match(f):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        f(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("f", [fs.softmax, fs.log_softmax, fs.logsumexp])
def test_where_not_broadcastable(f):
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        f(np.zeros((2, 4)), where=np.ones(3, bool))


def test_binary_target_shape_and_params(rng):
    x = _logits(rng)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        fs.binary_cross_entropy_with_logits(x, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="pos_weight"):
        fs.binary_cross_entropy_with_logits(x, np.zeros((4, 5)), pos_weight=np.ones(3))
    with pytest.raises(ValueError, match="weight"):
        fs.binary_cross_entropy_with_logits(x, np.zeros((4, 5)), weight=np.ones(2))


def test_grad_output_shapes(rng):
    x = _logits(rng)
    t = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="grad_output"):
        fs.cross_entropy_with_grad(x, t, grad_output=np.ones(4))
    with pytest.raises(ValueError, match="grad_output"):
        fs.cross_entropy_with_grad(x, t, reduction="none", grad_output=np.ones(3))
    loss, g = fs.cross_entropy_with_grad(x, t, reduction="none", grad_output=np.arange(4.0))
    assert np.all(g[0] == 0)


def test_object_and_string_inputs():
    with pytest.raises(TypeError, match="object"):
        fs.softmax(np.array([1, "a", None], dtype=object))
    with pytest.raises(TypeError):
        fs.softmax(["a", "b"])
    with pytest.raises(TypeError, match="target"):
        fs.cross_entropy(np.zeros((2, 3)), np.array(["a", "b"]))


def test_result_too_large_is_a_clean_memoryerror():
    with pytest.raises(MemoryError):
        fs.softmax_jacobian(np.zeros((4, 2**20)))     # 4 * 2**40 float64 entries
    with pytest.raises(MemoryError):
        fs.softmax(np.broadcast_to(np.float64(0), (2**31, 2**20)))
