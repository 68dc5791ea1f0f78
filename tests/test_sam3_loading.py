"""SAM3 checkpoints: the `sam3` models folder, both public layouts, clear errors, and the on-disk CLIP tokenizer."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from fixtures.tiny_sam3 import (HIDDEN, build_tiny_sam3, config_json, meta_state, meta_tracker_state, shared_tiny,
                                shared_tiny_video, tracker_state, write_hf_checkpoint, write_meta_checkpoint)
from luna_semantic_detailer.daemon import (checkpoint_files, checkpoints, layouts, meta_keys, meta_tracker_keys,
                                          models_folder)
from luna_semantic_detailer.daemon.errors import Sam3CheckpointError, Sam3TrackerMissing


@pytest.fixture(scope="module")
def tiny():
    return shared_tiny()


def _buffers(model) -> dict[str, torch.Tensor]:
    return dict(model.named_buffers())


def test_sam3_folder_is_registered_and_lists_only_weights(tiny):
    import folder_paths

    _, paths = tiny
    folders = folder_paths.get_folder_paths("sam3")
    assert os.path.join(folder_paths.models_dir, "sam3") in folders
    assert str(paths["hf"].parent) in folders
    names = models_folder.list_checkpoints()
    assert {"model.safetensors", "sam3.pt"} <= set(names)
    assert "config.json" not in names
    assert models_folder.resolve("sam3.pt") == str(paths["meta"])


@pytest.mark.parametrize("kind", ["hf", "meta"])
def test_both_layouts_load_the_exact_weights(tiny, kind):
    model, paths = tiny
    loaded = checkpoints.load_model(str(paths[kind]))
    want, got = model.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    want_buffers, got_buffers = _buffers(model), _buffers(loaded)
    for key in want_buffers:
        assert torch.equal(got_buffers[key], want_buffers[key]), key


def test_both_layouts_give_identical_outputs(tiny):
    model, paths = tiny
    torch.manual_seed(3)
    pixels = torch.randn(1, 3, 112, 112)
    ids = torch.tensor([[49406, 1710, 49407] + [49407] * 29])
    mask = (torch.arange(32) < 3).long()[None]
    outs = []
    for m in (model, checkpoints.load_model(str(paths["hf"])), checkpoints.load_model(str(paths["meta"]))):
        with torch.no_grad():
            outs.append(m(pixel_values=pixels, input_ids=ids, attention_mask=mask))
    for field in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits"):
        original, hf, meta = (getattr(o, field) for o in outs)
        assert torch.equal(hf, meta), field
        torch.testing.assert_close(hf, original, rtol=1e-4, atol=1e-5)


def test_tracker_and_interactive_weights_are_dropped(tiny):
    _, paths = tiny
    for kind in ("hf", "meta"):
        state = checkpoints.detector_state(str(paths[kind]))
        assert not any("tracker" in k or "sam2_convs" in k or "freqs_cis" in k for k in state)
    raw = torch.load(paths["meta"], weights_only=True)
    assert any(k.startswith("tracker.") for k in raw)


def _file_tensors(path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file, read with the libraries' own loaders."""
    from safetensors.torch import load_file

    return load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


@pytest.mark.parametrize("kind", ["hf", "meta"])
def test_read_tensors_reads_every_tensor_but_the_skipped_prefixes(tiny, kind):
    _, paths = tiny
    everything = _file_tensors(paths[kind])
    skip = ("tracker", "detector_model.mask_decoder.", "detector.segmentation_head.")
    read = checkpoint_files.read_tensors(str(paths[kind]), skip=skip)
    assert set(read) == {k for k in everything if not k.startswith(skip)} and len(read) < len(everything)
    assert all(torch.equal(read[k], everything[k]) for k in read)


@pytest.mark.parametrize("kind", ["hf", "meta"])
def test_exactly_one_layout_recognises_each_public_checkpoint(tiny, kind):
    _, paths = tiny
    keys = list(_file_tensors(paths[kind]))
    assert [layout.name for layout in checkpoints.LAYOUTS if layout.recognises(keys)] == [kind]
    assert checkpoints.detect_layout(keys).name == kind


def test_meta_checkpoint_wrapped_in_model_key_loads(tiny, tmp_path):
    model, _ = tiny
    path = write_meta_checkpoint(model, tmp_path / "trained.pt", wrap=True)
    (tmp_path / "trained.json").write_text(json.dumps(model.config.to_dict()))
    loaded = checkpoints.load_model(str(path))
    assert torch.equal(loaded.state_dict()["detr_decoder.box_head.layer3.weight"],
                       model.state_dict()["detr_decoder.box_head.layer3.weight"])


@pytest.mark.parametrize("meta, hf", [
    ("backbone.vision_backbone.trunk.blocks.3.attn.proj.weight", "vision_encoder.backbone.layers.3.attention.o_proj.weight"),
    ("backbone.vision_backbone.trunk.ln_pre.bias", "vision_encoder.backbone.layer_norm.bias"),
    ("backbone.vision_backbone.convs.0.dconv_2x2_1.weight", "vision_encoder.neck.fpn_layers.0.scale_layers.2.weight"),
    ("backbone.vision_backbone.convs.1.dconv_2x2.bias", "vision_encoder.neck.fpn_layers.1.scale_layers.0.bias"),
    ("backbone.vision_backbone.convs.2.conv_3x3.weight", "vision_encoder.neck.fpn_layers.2.proj2.weight"),
    ("backbone.language_backbone.encoder.transformer.resblocks.5.mlp.c_fc.weight",
     "text_encoder.text_model.encoder.layers.5.mlp.fc1.weight"),
    ("backbone.language_backbone.encoder.positional_embedding", "text_encoder.text_model.embeddings.position_embedding.weight"),
    ("backbone.language_backbone.resizer.weight", "text_projection.weight"),
    ("geometry_encoder.encode.0.cross_attn_image.out_proj.weight", "geometry_encoder.layers.0.cross_attn.o_proj.weight"),
    ("geometry_encoder.img_pre_norm.weight", "geometry_encoder.vision_layer_norm.weight"),
    ("transformer.encoder.layers.4.norm2.bias", "detr_encoder.layers.4.layer_norm2.bias"),
    ("transformer.decoder.layers.1.ca_text.out_proj.bias", "detr_decoder.layers.1.text_cross_attn.o_proj.bias"),
    ("transformer.decoder.layers.1.catext_norm.weight", "detr_decoder.layers.1.text_cross_attn_layer_norm.weight"),
    ("transformer.decoder.bbox_embed.layers.2.bias", "detr_decoder.box_head.layer3.bias"),
    ("transformer.decoder.presence_token_head.layers.0.weight", "detr_decoder.presence_head.layer1.weight"),
    ("transformer.decoder.norm.weight", "detr_decoder.output_layer_norm.weight"),
    ("dot_prod_scoring.prompt_mlp.layers.1.weight", "dot_product_scoring.text_mlp.layer2.weight"),
    ("dot_prod_scoring.hs_proj.bias", "dot_product_scoring.query_proj.bias"),
    ("segmentation_head.mask_predictor.mask_embed.layers.1.weight", "mask_decoder.mask_embedder.layers.1.weight"),
    ("segmentation_head.cross_attend_prompt.in_proj_weight", "mask_decoder.prompt_cross_attn.in_proj_weight"),
    ("backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis", None),
    ("backbone.vision_backbone.sam2_convs.0.conv_1x1.weight", None),
])
def test_meta_key_names_map_to_transformers_names(meta, hf):
    assert meta_keys.meta_key_to_hf(meta) == hf


def test_meta_fused_tensors_are_split_and_projection_transposed():
    qkv = torch.arange(18.0).reshape(6, 3)
    proj = torch.arange(6.0).reshape(2, 3)
    pos = torch.arange(10.0).reshape(1, 5, 2)
    state = meta_keys.meta_detector_state({
        "detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight": qkv,
        "detector.backbone.language_backbone.encoder.transformer.resblocks.0.attn.in_proj_bias": torch.arange(6.0),
        "detector.backbone.language_backbone.encoder.text_projection": proj,
        "detector.backbone.vision_backbone.trunk.pos_embed": pos,
        "tracker.anything": torch.zeros(1),
    })
    layer = "vision_encoder.backbone.layers.0.attention."
    assert torch.equal(state[layer + "q_proj.weight"], qkv[0:2])
    assert torch.equal(state[layer + "k_proj.weight"], qkv[2:4])
    assert torch.equal(state[layer + "v_proj.weight"], qkv[4:6])
    attn = "text_encoder.text_model.encoder.layers.0.self_attn."
    assert state[attn + "v_proj.bias"].tolist() == [4.0, 5.0]
    assert torch.equal(state["text_encoder.text_projection.weight"], proj.t())
    assert torch.equal(state["vision_encoder.backbone.embeddings.position_embeddings"], pos[:, 1:])
    assert len(state) == 8


def test_missing_checkpoint_names_the_folder(tiny):
    with pytest.raises(Sam3CheckpointError) as err:
        models_folder.resolve("nope.safetensors")
    assert "models/sam3" in str(err.value) and "nope.safetensors" in str(err.value)
    with pytest.raises(Sam3CheckpointError, match="models/sam3"):
        models_folder.resolve(models_folder.PLACEHOLDER)


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pt"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(Sam3CheckpointError, match="corrupt or incomplete"):
        checkpoints.load_model(str(path))


def test_truncated_safetensors_is_a_clear_error(tiny, tmp_path):
    _, paths = tiny
    data = paths["hf"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Sam3CheckpointError, match="download it again"):
        checkpoints.load_model(str(path))


def test_unknown_layout_lists_what_was_expected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(Sam3CheckpointError) as err:
        checkpoints.load_model(str(path))
    text = str(err.value)
    assert "unknown SAM3 key layout" in text and "model.diffusion_model" in text
    assert "detector_model.vision_encoder" in text and "detector.backbone.vision_backbone" in text


def test_missing_tensors_are_named(tiny, tmp_path):
    model, _ = tiny
    path = write_hf_checkpoint(model, tmp_path / "partial.safetensors")
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    del tensors["detector_model.detr_decoder.box_head.layer3.bias"]
    save_file(tensors, str(path))
    (tmp_path / "config.json").write_text(json.dumps(config_json(model)))
    with pytest.raises(Sam3CheckpointError, match=r"1 missing \(e\.g\. detr_decoder\.box_head\.layer3\.bias\)"):
        checkpoints.load_model(str(path))


def test_resized_model_without_config_says_to_add_one(tiny, tmp_path):
    model, _ = tiny
    path = write_hf_checkpoint(model, tmp_path / "small.safetensors")
    with pytest.raises(Sam3CheckpointError, match="small.json"):
        checkpoints.load_model(str(path))


def test_sidecar_config_beats_folder_config(tmp_path):
    a = build_tiny_sam3(seed=1)
    path = write_meta_checkpoint(a, tmp_path / "a.pt")
    (tmp_path / "a.json").write_text(json.dumps(a.config.to_dict()))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam3", "vision_config": {"fpn_hidden_size": 8}}))
    assert checkpoints.build_config(str(path)).vision_config.fpn_hidden_size == HIDDEN


def test_meta_state_dict_keys_all_have_the_detector_prefix_or_tracker(tiny):
    model, _ = tiny
    keys = meta_state(model)
    assert all(k.startswith(("detector.", "tracker.")) for k in keys)
    assert checkpoints.detect_layout(keys) is layouts.META


def test_tokenizer_matches_comfyui_clip_tokenizer():
    from comfy.sd1_clip import SDTokenizer
    from luna_semantic_detailer.daemon.tokenizer import CONTEXT_LENGTH, tokenize

    prompts = ["face", "a red hand", "Dog, with   spaces"]
    ids, mask = tokenize(prompts)
    assert ids.shape == mask.shape == (3, CONTEXT_LENGTH)
    comfy_tok = SDTokenizer()
    for row, prompt in enumerate(prompts):
        ref = [t for t, _w in comfy_tok.tokenize_with_weights(prompt)[0]]
        ref = ref[: ref.index(49407) + 1]
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == ref
        assert ids[row, n:].eq(49407).all() and mask[row, n:].eq(0).all()


def test_tokenizer_truncates_long_prompts_at_32():
    from luna_semantic_detailer.daemon.tokenizer import tokenize

    ids, mask = tokenize([" ".join(["cat"] * 60)])
    assert ids.shape == (1, 32) and int(mask.sum()) == 32
    assert ids[0, 0].item() == 49406 and ids[0, -1].item() == 49407


@pytest.mark.parametrize("kind", ["hf", "meta"])
def test_both_layouts_load_the_exact_tracker(kind):
    video, paths = shared_tiny_video()
    tracker, neck, config = checkpoints.load_tracker(str(paths[kind]))
    assert tracker.vision_encoder is None  # the detector's image encoder is the only one
    want = tracker_state(video)
    got = {**{f"tracker_model.{k}": v for k, v in tracker.state_dict().items()},
           **{f"tracker_neck.{k}": v for k, v in neck.state_dict().items()}}
    assert set(got) == set(want)
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    for name, buffer in video.tracker_model.named_buffers():
        assert torch.equal(dict(tracker.named_buffers())[name], buffer), name
    assert config.tracker_config.to_dict() == video.config.tracker_config.to_dict()
    assert config.low_res_mask_size == video.config.low_res_mask_size == 32


def test_meta_tracker_names_round_trip():
    video, _ = shared_tiny_video()
    meta = meta_tracker_state(video)
    assert all(k.startswith(("tracker.", "detector.backbone.vision_backbone.sam2_convs.")) for k in meta)
    state = meta_tracker_keys.meta_tracker_state(meta)
    want = tracker_state(video)
    assert set(state) == set(want) and all(torch.equal(state[k], want[k]) for k in want)


def test_the_tracker_is_read_alone():
    _, paths = shared_tiny_video()
    for kind in ("hf", "meta"):
        read = checkpoint_files.read_tensors(str(paths[kind]), keep=layouts.HF.tracker_read + layouts.META.tracker_read)
        assert read and all(k.startswith(("tracker", "detector.backbone.vision_backbone.sam2_convs.")) for k in read)


def test_meta_tracker_names_are_those_comfyui_loads_sam3_pt_with():
    """ComfyUI 0.33's own SAM3 tracker loads Meta's sam3.pt by its names: at full size, the tests' writer gives exactly
    its tensor names and shapes, and the loader maps them onto exactly transformers' full-size Sam3VideoModel tracker."""
    try:
        import comfy.ops
        from comfy.ldm.sam3.sam import SAM3VisionBackbone
        from comfy.ldm.sam3.tracker import SAM3Tracker
    except ImportError:
        pytest.skip("this ComfyUI has no SAM3 of its own (0.28+)")
    from transformers import Sam3VideoConfig, Sam3VideoModel

    with torch.device("meta"):
        comfy_tracker = SAM3Tracker(operations=comfy.ops.disable_weight_init)
        backbone = SAM3VisionBackbone(operations=comfy.ops.disable_weight_init)
        video = Sam3VideoModel(Sam3VideoConfig())

    def sam3_pt_name(key: str) -> str:  # ComfyUI renames these three on load (comfy/supported_models.py, SAM3)
        if "sam_mask_decoder.transformer." not in key:
            return key
        return key.replace(".mlp.0.", ".mlp.lin1.").replace(".mlp.2.", ".mlp.lin2.").replace(".norm_final.",
                                                                                            ".norm_final_attn.")

    comfy_names = {sam3_pt_name(f"tracker.{k}"): tuple(v.shape) for k, v in comfy_tracker.state_dict().items()}
    comfy_names.update({f"detector.backbone.vision_backbone.{k}": tuple(v.shape)
                        for k, v in backbone.state_dict().items() if k.startswith("sam2_convs.")})
    written = {k: tuple(v.shape) for k, v in meta_tracker_state(video).items()}
    assert written == comfy_names
    loaded = meta_tracker_keys.meta_tracker_state({k: torch.empty(shape, device="meta")
                                                   for k, shape in comfy_names.items()})
    want = {k: tuple(v.shape) for k, v in video.state_dict().items() if not k.startswith("detector_model.")}
    assert {k: tuple(v.shape) for k, v in loaded.items()} == want


def test_video_config_reads_the_sidecar_and_defaults_to_facebook_sam3(tmp_path):
    video, paths = shared_tiny_video()
    config = checkpoints.build_video_config(str(paths["hf"]))
    assert config.tracker_config.memory_attention_num_layers == 1 and config.hotstart_delay == 15
    model = build_tiny_sam3(seed=2)
    path = write_meta_checkpoint(model, tmp_path / "bare.pt", with_tracker=False)
    (tmp_path / "bare.json").write_text(json.dumps(model.config.to_dict()))
    config = checkpoints.build_video_config(str(path))
    assert config.detector_config.vision_config.fpn_hidden_size == HIDDEN
    assert config.tracker_config.memory_attention_num_layers == 4 and config.low_res_mask_size == 32


def test_a_resized_tracker_without_its_config_is_named(tmp_path):
    model = build_tiny_sam3(seed=3)
    path = write_hf_checkpoint(model, tmp_path / "small.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config_json(model)))  # the detector's config only
    with pytest.raises(Sam3CheckpointError, match=r"does not fit the SAM3 video tracker: .*small\.json"):
        checkpoints.load_tracker(str(path))


@pytest.mark.parametrize("kind", ["hf", "meta"])
def test_a_checkpoint_without_tracker_says_so_before_loading_anything(tmp_path, kind):
    model = build_tiny_sam3(seed=4)
    path = (write_hf_checkpoint(model, tmp_path / "image.safetensors", with_tracker=False) if kind == "hf" else
            write_meta_checkpoint(model, tmp_path / "image.pt", with_tracker=False))
    with pytest.raises(Sam3TrackerMissing, match="holds no SAM3 video tracker.*mode to 'per frame'"):
        checkpoints.load_tracker(str(path))
