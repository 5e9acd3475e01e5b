"""timm's backbone contract on our models: intermediates, pruning, fx, grad checkpointing, lr-decay groups."""

import copy
import inspect

import pytest
import torch
from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torchvision.models.feature_extraction import create_feature_extractor

from mobilenet_pl import MobileNet, MobileNetFeatures, create_model, list_models
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE, check_input_size

MODELS = list_models()
X = torch.randn(2, 3, 64, 64)


def _model(name: str, **kwargs) -> MobileNet:
    model = create_model(name, width=0.5, **kwargs).eval()
    assert isinstance(model, MobileNet)
    return model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("small_input", [False, True])
def test_forward_intermediates_match_forward_features_and_features_only(name: str, small_input: bool) -> None:
    model = _model(name, small_input=small_input)
    final, taps = model.forward_intermediates(X)
    torch.testing.assert_close(final, model.forward_features(X), rtol=0, atol=0)
    assert [t.shape[1] for t in taps] == model.feature_info.channels()
    assert [64 // t.shape[-1] for t in taps] == model.feature_info.reduction()
    features = create_model(name, width=0.5, small_input=small_input, features_only=True)
    features.load_state_dict({k: v for k, v in model.state_dict().items() if k in features.state_dict()})
    for ours, theirs in zip(taps, features.eval()(X), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_indices_and_stop_early(name: str) -> None:
    model = _model(name)
    taps = model.forward_intermediates(X, intermediates_only=True)
    assert len(taps) == len(model.feature_info) == 5
    last_two = model.forward_intermediates(X, indices=2, intermediates_only=True)
    picked = model.forward_intermediates(X, indices=[0, -1], intermediates_only=True)
    for got, want in [(last_two, taps[3:]), (picked, [taps[0], taps[4]])]:
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    final, early = model.forward_intermediates(X, indices=[1], stop_early=True)
    torch.testing.assert_close(early[0], taps[1], rtol=0, atol=0)
    torch.testing.assert_close(final, taps[1], rtol=0, atol=0)  # stopped at the tap: no later stage, no head
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        model.forward_intermediates(X, output_fmt="NHWC")


@pytest.mark.parametrize("name", MODELS)
def test_prune_intermediate_layers(name: str) -> None:
    model = _model(name)
    taps = model.forward_intermediates(X, intermediates_only=True)
    expected = model(X)

    kept = copy.deepcopy(model)
    assert kept.prune_intermediate_layers([4], prune_head=False) == [4]
    torch.testing.assert_close(kept(X), expected, rtol=0, atol=0)  # nothing after the last tap but the head

    for index in range(len(taps)):
        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([index]) == [index]
        torch.testing.assert_close(pruned.forward_features(X), taps[index], rtol=0, atol=0)
        assert pruned.num_features == taps[index].shape[1] and pruned.num_classes == 0
        assert pruned(X).shape == taps[index].shape  # no pooling, no classifier left
        assert not any(k.startswith(("head.", "classifier.")) for k in pruned.state_dict())
        pruned.train().forward_features(X).sum().backward()
        assert all(p.grad is not None for p in pruned.parameters()), "a pruned model trains every parameter it keeps"


@pytest.mark.parametrize("name", MODELS)
def test_fx_trace_and_feature_extractor_match_eager(name: str) -> None:
    model = _model(name)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(X), model(X), rtol=0, atol=0)
    extractor = create_feature_extractor(model, return_nodes={"stages.2": "c3", "stages.4": "c4", "head": "out"})
    out = extractor(X)
    taps = model.forward_intermediates(X, intermediates_only=True)
    torch.testing.assert_close(out["c3"], taps[2], rtol=0, atol=0)
    torch.testing.assert_close(out["c4"], taps[4] if name == "mobilenet_v1" else out["c4"], rtol=0, atol=0)
    torch.testing.assert_close(out["out"], model.forward_features(X), rtol=0, atol=0)
    # the size check stays in the traced graph and in the extractor (it is on the data path)
    for graph_module in (traced, extractor):
        with pytest.raises(ValueError, match=f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"):
            graph_module(torch.randn(1, 3, MIN_INPUT_SIZE - 1, 64))


@pytest.mark.parametrize("name", MODELS)
def test_fx_then_torchscript(name: str) -> None:
    model = _model(name)
    scripted = torch.jit.script(torch.fx.symbolic_trace(model))
    torch.testing.assert_close(scripted(X), model(X))
    extractor = torch.jit.script(create_feature_extractor(model, return_nodes=["stages.1", "head"]))
    torch.testing.assert_close(extractor(X)["head"], model.forward_features(X))
    with pytest.raises(Exception, match=f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"):
        scripted(torch.randn(1, 3, 64, MIN_INPUT_SIZE - 1))


def _saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(storages.values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("features_only", [False, True])
def test_grad_checkpointing_same_gradients_and_bn_stats_less_saved_memory(name: str, features_only: bool) -> None:
    torch.manual_seed(0)
    model = create_model(name, width=0.5, drop_path_rate=0.1, dropout=0.0, features_only=features_only).train()
    reference = copy.deepcopy(model)
    x = torch.randn(4, 3, 64, 64)
    if features_only:
        for m in (model, reference):  # a scalar out of the feature list, as a loss would be
            m.forward = lambda x, f=m.forward: sum(t.sum() for t in f(x))  # type: ignore[method-assign]
    torch.manual_seed(1)
    plain = _saved_activation_bytes(reference, x)
    model.set_grad_checkpointing()
    torch.manual_seed(1)  # same drop-path draws: checkpointing replays the RNG state in the recomputation
    checkpointed = _saved_activation_bytes(model, x)
    assert checkpointed < plain / 3
    for (n, a), (_, b) in zip(reference.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=n)
    # the recomputation in backward does not move BatchNorm statistics a second time
    for (n, a), (_, b) in zip(reference.named_buffers(), model.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_covers_every_parameter_in_depth_order(name: str, coarse: bool) -> None:
    model = create_model(name, width=0.25)
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    grouped = [n for names in groups.values() for n in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
    order = [names[0].split(".")[0] for names in groups.values()]
    assert order[0] == "stem" and order[-1] == "classifier"
    n_stages, n_blocks = len(model.stages), sum(len(s) for s in model.stages)
    assert len(groups) == 1 + (n_stages if coarse else n_blocks) + 1
    if name == "mobilenet_v2":  # the final 1x1 conv joins the last block's group (timm's MATCH_PREV_GROUP)
        assert list(groups.values())[-2][-1].startswith("head.")
    # layer-wise lr decay built from it: the stem decays most, the classifier not at all
    scale = {id(p): g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g["params"]}
    decay = {n: scale[id(p)] for n, p in model.named_parameters()}
    assert decay["stem.conv.weight"] < min(s for n, s in decay.items() if n.startswith("stages")) <= 1.0
    assert max(decay.values()) == decay["classifier.weight"] == 1.0


@pytest.mark.parametrize("name", MODELS)
def test_global_pool_options_and_reset_classifier(name: str) -> None:
    model = _model(name, num_classes=4)
    feats = model.forward_features(X)
    assert model.head_hidden_size == model.num_features
    for pool, expected in [("avg", feats.mean((2, 3))), ("max", feats.amax((2, 3)))]:
        model.reset_classifier(0, pool)
        torch.testing.assert_close(model(X), expected)
    model.reset_classifier(0, "avgmax")
    torch.testing.assert_close(model(X), (feats.mean((2, 3)) + feats.amax((2, 3))) / 2)
    model.reset_classifier(3, "catavgmax")
    assert model.head_hidden_size == 2 * model.num_features and model(X).shape == (2, 3)
    model.reset_classifier(0, "")
    torch.testing.assert_close(model(X), feats)  # no pooling: the spatial features
    model.reset_classifier(0)  # global_pool=None keeps the current pooling ...
    assert model.global_pool.pool_type == "" and model(X).shape == feats.shape
    model.reset_classifier(2)  # ... but a classifier needs pooled features
    assert model.global_pool.pool_type == "avg" and model(X).shape == (2, 2)
    with pytest.raises(ValueError, match="global_pool='' \\(no pooling\\) needs num_classes=0"):
        model.reset_classifier(5, "")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        create_model(name, global_pool="mean")
    assert inspect.signature(MobileNet.reset_classifier).parameters["global_pool"].default is None


def test_reset_classifier_keeps_device_dtype_and_mode() -> None:
    model = create_model("v2", width=0.35).to(torch.float64).eval()
    model.reset_classifier(3, "max")
    assert model.classifier.weight.dtype == torch.float64 and not model.classifier.training
    assert model(X.double()).shape == (2, 3)


def test_input_size_check_uses_min_input_size() -> None:
    assert inspect.signature(check_input_size).parameters["min_size"].default == MIN_INPUT_SIZE
    check_input_size(torch.randn(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE))
    with pytest.raises(ValueError, match=f"got {MIN_INPUT_SIZE - 1}x{MIN_INPUT_SIZE}"):
        check_input_size(torch.randn(1, 3, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE))
    assert create_model("v1").pretrained_cfg["min_input_size"] == (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_is_a_sibling_with_only_working_methods(name: str) -> None:
    features = create_model(name, width=0.25, features_only=True)
    assert isinstance(features, MobileNetFeatures) and not isinstance(features, MobileNet)
    for attr in ("forward_head", "reset_classifier", "classifier", "head", "dropout"):
        assert not hasattr(features, attr)  # not inherited-then-deleted: never there
    # every method the class defines runs
    public = [n for n, v in vars(MobileNetFeatures).items() if callable(v) and not n.startswith("_")]
    assert sorted(public) == ["forward", "set_grad_checkpointing"]
    features.set_grad_checkpointing(False)
    assert len(features(X)) == len(features.feature_info)
    assert features.pretrained_cfg["first_conv"] == "stem.conv" and "classifier" not in features.pretrained_cfg


@pytest.mark.parametrize("name", MODELS)
def test_features_only_ignores_classifier_keywords_as_timm(name: str) -> None:
    plain = create_model(name, width=0.25, features_only=True)
    with_head_keys = create_model(name, width=0.25, features_only=True, num_classes=10, dropout=0.5, global_pool="max")
    assert list(plain.state_dict()) == list(with_head_keys.state_dict())
